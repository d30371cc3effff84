"""The feature space of an embedding model: features in batches, a 2-D map, cosine neighbours.

    feats = features(model, images)            # (N,D) float32, on the model's device
    coords = project(feats)                     # (N,2) PCA (exact, deterministic), or "umap"
    idx, sim = neighbour_table(feats, k=5)      # (N,k) nearest by cosine similarity, self excluded
    knn_accuracy(feats, labels, k=5)            # how well the space separates known classes

Everything runs on the device of the features (the model's); nothing here knows the widget.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .explanation import DegenerateMapWarning
from .inputs import model_device
from .tap import preserved
from .targets import OutputKey, feature_vector

PROJECTIONS = ("pca", "umap")


def features(
    model: nn.Module, images: Tensor, batch_size: int = 256, output_key: OutputKey = None
) -> Tensor:
    """The feature vectors ``(N,D)`` float32 of ``images`` ``(N,3,H,W)``, on the model's device.

    Computed in eval mode, ``batch_size`` images at a time (each batch moved to the model's
    device); the model comes back as it went in. A 4-D output is pooled to a vector.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        got = type(images).__name__ if not isinstance(images, Tensor) else tuple(images.shape)
        raise ValueError(f"images must be a (N,3,H,W) tensor, got {got}")
    if len(images) == 0:
        raise ValueError("images is empty: a feature map needs at least one image")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = model_device(model)
    with preserved(model), torch.inference_mode():
        out = [
            feature_vector(model(images[i : i + batch_size].to(device)), output_key).float()
            for i in range(0, len(images), batch_size)
        ]
    feats = torch.cat(out).clone()  # a normal tensor (not an inference one) for later autograd
    bad = (~torch.isfinite(feats)).any(dim=1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"the model gives non-finite features for {len(rows)} image(s) (first: {rows[:5]}); "
            "a map of them would be meaningless"
        )
    return feats


@dataclass(frozen=True)
class PCA:
    """An exact PCA: ``coords`` ``(N,d)``, ``components`` ``(d,D)`` (unit rows, sign fixed so
    that each row's largest-|loading| entry is positive), ``mean`` ``(D,)`` and the fraction of
    the variance each component explains, ``explained`` ``(d,)``."""

    coords: Tensor
    components: Tensor
    mean: Tensor
    explained: Tensor


def pca(feats: Tensor, dim: int = 2) -> PCA:
    """Exact principal components of ``feats`` ``(N,D)``, on its device.

    The ``(D,D)`` covariance is formed in float32 and diagonalised in float64 (``eigh``: exact,
    deterministic); the sign of each component is fixed, so the same input gives the same map.
    With fewer than ``dim`` directions of variance, the missing coordinates are 0.
    """
    x = _check(feats)
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    n, d = x.shape
    mean = x.mean(dim=0)
    gram = x.new_zeros(d, d)
    for chunk in x.split(8192):  # centred in blocks: exact, and no second (N,D) copy in memory
        centred = chunk - mean
        gram.addmm_(centred.T, centred)
    cov = gram.double() / max(n - 1, 1)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    total = float(values.sum())
    scale = float(cov.diagonal().sum()) + float(mean.double().square().sum())
    if total <= 1e-12 * max(scale, 1e-30) or n < 2:
        warnings.warn(
            "every feature vector is the same: the map puts all points at one place",
            DegenerateMapWarning,
            stacklevel=2,
        )
    take = min(dim, d)
    comps = vectors[:, :take].T  # (take, D)
    pivot = comps.abs().argmax(dim=1)
    signs = comps.gather(1, pivot[:, None]).sign()
    signs[signs == 0] = 1
    comps = (comps * signs).to(x.dtype)
    coords = torch.cat([(chunk - mean) @ comps.T for chunk in x.split(8192)])
    explained = values[:take] / total if total > 0 else torch.zeros(take, dtype=values.dtype)
    if take < dim:
        coords = torch.cat([coords, coords.new_zeros(n, dim - take)], dim=1)
        comps = torch.cat([comps, comps.new_zeros(dim - take, d)])
        explained = torch.cat([explained, explained.new_zeros(dim - take)])
    return PCA(coords, comps, mean, explained.float())


def umap(
    feats: Tensor, dim: int = 2, seed: int = 0, n_neighbors: int = 15, **options: Any
) -> Tensor:
    """UMAP coordinates ``(N,dim)`` (``umap-learn``, on the CPU; cosine metric, fixed seed)."""
    x = _check(feats)
    try:
        import umap as umap_learn
    except ImportError as error:
        raise ImportError(
            "projection='umap' needs the umap-learn package: pip install 'famwidget[umap]' "
            "(or pip install umap-learn); projection='pca' works without it"
        ) from error
    reducer = umap_learn.UMAP(
        n_components=dim,
        n_neighbors=min(n_neighbors, max(2, len(x) - 1)),
        metric="cosine",
        random_state=seed,
        **options,
    )
    coords = reducer.fit_transform(x.detach().cpu().numpy())
    return torch.as_tensor(coords, dtype=torch.float32, device=x.device)


def project(feats: Tensor, projection: str = "pca", dim: int = 2, **options: Any) -> Tensor:
    """Coordinates ``(N,dim)`` of ``feats`` ``(N,D)``: ``"pca"`` (default) or ``"umap"``."""
    if projection == "pca":
        if options:
            raise TypeError(f"projection='pca' takes no options, got {sorted(options)}")
        return pca(feats, dim).coords
    if projection == "umap":
        return umap(feats, dim, **options)
    raise ValueError(f"projection must be one of {PROJECTIONS}, not {projection!r}")


def neighbour_table(feats: Tensor, k: int = 5, batch: int = 4096) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest neighbours of every row by cosine similarity, itself excluded.

    Returns indices ``(N,k)`` int64 and similarities ``(N,k)`` float32, best first (``k`` is
    capped at ``N-1``); computed ``batch`` rows at a time on the features' device.
    """
    x = F.normalize(_check(feats), dim=1)
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        empty = torch.empty(n, 0, device=x.device)
        return empty.long(), empty
    indices, scores = [], []
    for start in range(0, n, batch):
        sim = x[start : start + batch] @ x.T
        rows = torch.arange(start, min(start + batch, n), device=x.device)
        sim[rows - start, rows] = -float("inf")
        top = sim.topk(k, dim=1)
        indices.append(top.indices)
        scores.append(top.values)
    return torch.cat(indices), torch.cat(scores)


def neighbours(
    feats: Tensor, index: int, k: int = 5, normalized: bool = False
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest neighbours of row ``index``: indices ``(k,)``, similarities ``(k,)``.

    ``normalized=True``: ``feats`` rows already have unit norm (no normalised copy is made:
    a query over 50,000 x 512 features is then one matrix-vector product)."""
    x = feats.detach().float() if normalized else F.normalize(_check(feats), dim=1)
    if not -len(x) <= index < len(x):
        raise IndexError(f"index {index} is out of range for {len(x)} feature vectors")
    index %= len(x)
    sim = x @ x[index]
    sim[index] = -float("inf")
    top = sim.topk(min(k, len(x) - 1))
    return top.indices, top.values


def knn_accuracy(feats: Tensor, labels: Sequence[Any] | Tensor, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy: the fraction of points whose ``k`` cosine neighbours'
    majority label (ties: the nearest such label) is their own label."""
    x = _check(feats)
    values = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    if len(values) != len(x):
        raise ValueError(f"got {len(values)} labels for {len(x)} feature vectors")
    names = {v: i for i, v in enumerate(dict.fromkeys(values))}
    codes = torch.tensor([names[v] for v in values], device=x.device)
    idx, _ = neighbour_table(x, k)
    if idx.shape[1] == 0:
        raise ValueError("k-NN accuracy needs at least two points")
    votes = codes[idx]  # (N,k)
    counts = F.one_hot(votes, len(names)).sum(dim=1).float()  # (N,C)
    # ties broken towards the nearest neighbour's label: a small bonus by rank
    rank = torch.linspace(0.5, 0.01, idx.shape[1], device=x.device)
    counts.scatter_add_(1, votes, rank.expand_as(votes) * 1e-3)
    return float((counts.argmax(dim=1) == codes).float().mean())


def _check(feats: Tensor) -> Tensor:
    if not isinstance(feats, Tensor) or feats.dim() != 2:
        got = type(feats).__name__ if not isinstance(feats, Tensor) else tuple(feats.shape)
        raise ValueError(f"features must be an (N,D) tensor, got {got}")
    if len(feats) == 0:
        raise ValueError("features is empty")
    if not torch.isfinite(feats).all():
        raise ValueError("features hold non-finite values (nan or inf)")
    return feats.detach().float()
