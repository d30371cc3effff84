"""Visual explanation by interpretation (Oramas, Wang, Tuytelaars; seed 001).

    e_c   = sum_ij A_c[i,j]²                   for every channel c of every chosen layer output
    x     = L2( concat_layers( e / sum_c e_c ) )  the feature vector of one image (D,)
    W     = argmin ||X W - Y||²  s.t. ||W[:, j]||_1 <= tau   (Y one-hot, one column per class)

The relevant features of class ``j`` are the non-zero ``W[:, j]`` (signed). At test time the
predicted class ``c`` is explained by the features with the largest relevance
``r_i = x_i * w_ic / sum_i w_ic`` (``r_i > 0``, top 3), each visualised by the deconvnet with the
stride fix (:mod:`famwidget.explainers.deconv`); the heatmap is their pixelwise maximum.

Default layers (``layers=None``): the outputs of the network's blocks, found with one probing
forward pass: every activation module (ReLU, ...) and every block that is neither the root nor
a plain container (Sequential, ModuleList, ModuleDict), that runs once and outputs a spatial
``(B,K,h,w)`` map. On VGG these are the ReLUs after every conv, on ResNet the stem ReLU and
every residual block (BasicBlock/Bottleneck, after its final ReLU). The paper takes the
rectified outputs of all conv layers; block outputs are those rectified maps wherever a module
exists for them. A model with neither falls back to every Conv2d output. Layers the deconvnet
cannot pass back from are skipped (:meth:`Deconvnet.explainable`): those after an attention (the
blocks of a ViT or Swin), and channels-last ones; a ViT keeps its patch embedding.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..explanation import Explanation, flag_degenerate
from ..inputs import check_images, model_device
from ..method import Method
from ..tap import preserved, resolve_layer
from ..targets import ClassLogit
from .deconv import BN_RULES, RELU_RULES, Deconvnet
from .lasso import GramStatistics

FORMAT = "famwidget.interpreter"
VERSION = 1
_PLAIN_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def default_layers(model: nn.Module, example: Tensor) -> list[str]:
    """Block outputs of ``model`` (see the module docstring), in execution order.

    ``example`` ``(B,C,H,W)``: a batch the model accepts, for one probing forward pass.
    """
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    spatial: list[str] = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            is_map = isinstance(output, Tensor) and output.dim() == 4
            if is_map and output.shape[-2] * output.shape[-1] > 1 and name not in spatial:
                spatial.append(name)

        return record

    with preserved(model):  # holds the model's lock: no other thread's forward sees the hooks
        handles = [m.register_forward_hook(hook(n)) for n, m in modules.items() if n]
        try:
            with torch.inference_mode():
                model(example)
        finally:
            for h in handles:
                h.remove()
    once = [n for n in spatial if calls[n] == 1]
    blocks = [n for n in once if _is_block_output(modules[n])]
    convs = [n for n in once if isinstance(modules[n], nn.Conv2d)]
    if not blocks and not convs:
        raise ValueError(
            "found no layer with a spatial (B,K,h,w) output that runs once; pass layers=[...]"
        )
    reasons = _deconvnet_reasons(model, example, list(dict.fromkeys(blocks + convs)))
    chosen = [n for n in blocks if reasons.get(n) is None]
    chosen = chosen or [n for n in convs if reasons.get(n) is None]
    if not chosen:
        why = "; ".join(f"{n}: {reasons[n]}" for n in (blocks or convs)[-3:])
        raise ValueError(
            "the deconvnet can pass back from none of the model's block outputs and conv "
            f"layers, so no feature could be shown ({why}); pass layers=[...]"
        )
    return chosen


def _deconvnet_reasons(model: nn.Module, example: Tensor, layers: list[str]) -> dict:
    """For each layer: why the deconvnet cannot show its features (``None``: it can)."""
    try:
        deconv = Deconvnet(model)
        return deconv.explainable(example, layers, channels_last=False)
    except ValueError as error:  # torch.fx cannot trace the model
        warnings.warn(
            f"the Interpreter's default layers could not be checked for the deconvnet ({error}); "
            "fit works, explain() and average_visualizations() need a traceable model",
            stacklevel=3,
        )
        return {}


def _is_block_output(module: nn.Module) -> bool:
    if type(module).__module__ == "torch.nn.modules.activation":
        return True
    has_children = next(module.children(), None) is not None
    return has_children and not isinstance(module, _PLAIN_CONTAINERS)


class _EnergyTap:
    """Forward hooks that keep ``e_c = sum_ij A_c[i,j]²`` ``(B,K)`` of each layer's output."""

    def __init__(self, model: nn.Module, layers: list[str]) -> None:
        self.modules = [resolve_layer(model, name) for name in layers]
        self.energies: dict[str, Tensor] = {}
        self.handles: list[Any] = []

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple, output: object) -> None:
            if name in self.energies:
                raise ValueError(
                    f"layer {name!r} runs more than once in the forward pass (a shared module); "
                    "pick layers that run once"
                )
            if not isinstance(output, Tensor) or output.dim() != 4:
                found = tuple(output.shape) if isinstance(output, Tensor) else type(output)
                raise ValueError(f"layer {name!r} must output (B,K,h,w), it gave {found}")
            self.energies[name] = output.float().square().sum(dim=(2, 3))

        return record

    def __enter__(self) -> _EnergyTap:
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def energy_features(energies: Sequence[Tensor]) -> Tensor:
    """Per layer ``(B,K_l)`` energies → ``(B,D)``: L1 within each layer, concat, then L2."""
    parts = [e / e.sum(dim=1, keepdim=True).clamp_min(1e-30) for e in energies]
    return F.normalize(torch.cat(parts, dim=1), dim=1)


def _batches(
    data: Tensor | Iterable, labels: Any, batch_size: int
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """``(images, labels or None)`` batches from a tensor (+ labels) or an iterable of batches.

    An iterable (e.g. a DataLoader) yields image batches or ``(images, labels, ...)`` tuples.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(data, Tensor):
        images = check_images(data)
        y = None if labels is None else torch.as_tensor(labels).long().flatten()
        if y is not None and y.numel() != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {y.numel()} labels")
        for i in range(0, images.shape[0], batch_size):
            yield images[i : i + batch_size], None if y is None else y[i : i + batch_size]
        return
    if not isinstance(data, Iterable):
        raise TypeError(
            f"images must be a (N,3,H,W) tensor or an iterable of batches (a DataLoader), "
            f"not {type(data).__name__}"
        )
    offset = 0
    given = None if labels is None else torch.as_tensor(labels).long().flatten()
    for item in data:
        x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        x = check_images(x)
        if given is not None:
            y = given[offset : offset + x.shape[0]]
        offset += x.shape[0]
        yield x, None if y is None else torch.as_tensor(y).long().flatten()


DISTRIBUTED = ("auto", "sharded", "off")


def rank_batches(
    data: Tensor | Iterable, labels: Any, batch_size: int, distributed: str = "auto"
) -> tuple[Iterator[tuple[Tensor, Tensor | None]], bool]:
    """This rank's ``(images, labels)`` batches, and whether the ranks must all-reduce.

    Outside torchrun (or with one rank, or ``distributed="off"``): every batch, no reduction.
    ``"sharded"``: every batch given (the caller gave this rank its own part). ``"auto"``:
    a contiguous block of the batches of a tensor, or of the index batches of a map-style
    ``DataLoader`` (its dataset in order: the sums do not depend on it; only this rank's
    images are loaded, by the loader's own workers and collate function); a ``DataLoader``
    whose sampler is a ``DistributedSampler`` as it is (it already is this rank's part); any
    other iterable's every ``world_size``-th batch (each rank reads them all).
    """
    import torch.distributed as dist

    if distributed not in DISTRIBUTED:
        raise ValueError(f"distributed must be one of {DISTRIBUTED}, not {distributed!r}")
    active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed == "off" or not active:
        return _batches(data, labels, batch_size), False
    if distributed == "sharded":
        return _batches(data, labels, batch_size), True
    rank, size = dist.get_rank(), dist.get_world_size()
    if isinstance(data, Tensor):
        images = check_images(data)
        y = None if labels is None else torch.as_tensor(labels).long().flatten()
        if y is not None and y.numel() != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {y.numel()} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        block = _block(-(-images.shape[0] // batch_size), rank, size)
        start, stop = block.start * batch_size, block.stop * batch_size
        if not len(block):  # fewer batches than ranks: this one adds nothing
            return iter(()), True
        part = None if y is None else y[start:stop]
        return _batches(images[start:stop], part, batch_size), True
    loader = data if isinstance(data, torch.utils.data.DataLoader) else None
    if loader is not None and isinstance(loader.sampler, torch.utils.data.DistributedSampler):
        sampler = loader.sampler
        if sampler.total_size > len(sampler.dataset) and not sampler.drop_last:
            raise ValueError(
                f"the DataLoader's DistributedSampler pads {len(sampler.dataset)} entries to "
                f"{sampler.total_size} with repeated ones, which the fit would count twice; "
                "pass the DataLoader without a DistributedSampler (fit then gives each rank "
                "its part) or a dataset whose size the world size divides"
            )
        if labels is not None:
            raise ValueError("with a DistributedSampler the batches must carry their labels")
        return _batches(data, None, batch_size), True
    if loader is not None and _map_style(loader):
        return _loader_block(loader, labels, rank, size), True
    every = enumerate(_batches(data, labels, batch_size))
    return (batch for i, batch in every if i % size == rank), True


def _block(n: int, rank: int, size: int) -> range:
    """Rank ``rank``'s contiguous block of ``range(n)``: disjoint, covering, no padding."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def _map_style(loader: torch.utils.data.DataLoader) -> bool:
    dataset = loader.dataset
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    return not iterable and loader.batch_sampler is not None and hasattr(dataset, "__len__")


def _loader_block(
    loader: torch.utils.data.DataLoader, labels: Any, rank: int, size: int
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """The batches of rank ``rank``'s block of a map-style DataLoader's index batches."""
    data = torch.utils.data
    if isinstance(loader.sampler, data.SequentialSampler):
        index_batches = list(loader.batch_sampler)
    else:  # a shuffled order differs between processes: take the dataset's own order
        keep = data.BatchSampler(
            data.SequentialSampler(loader.dataset),
            loader.batch_sampler.batch_size,
            loader.batch_sampler.drop_last,
        )
        index_batches = list(keep)
    mine = [index_batches[i] for i in _block(len(index_batches), rank, size)]
    workers = loader.num_workers
    extra = {"prefetch_factor": loader.prefetch_factor} if workers > 0 else {}
    part = data.DataLoader(
        loader.dataset,
        batch_sampler=mine,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        persistent_workers=loader.persistent_workers if workers > 0 else False,
        **extra,
    )
    given = None if labels is None else torch.as_tensor(labels).long().flatten()
    for indices, item in zip(mine, part, strict=True):
        x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        if given is not None:
            y = given[torch.as_tensor(list(indices))]
        yield check_images(x), None if y is None else torch.as_tensor(y).long().flatten()


class Interpreter:
    """Find the features relevant to each class, and explain predictions with them (seed 001).

    Args:
        model: a CNN (any ``nn.Module``; ``explain`` and visualisations need ``torch.fx`` tracing).
        layers: module names whose outputs give the features; ``None`` = the block outputs
            (see the module docstring), found at ``fit``.
        tau: the L1 budget of each class's weights (10 as in the paper; about 5 suits small nets).
        top_k: how many features explain one prediction (3 in the paper).
        relu, stride_fix, bn: the deconvnet's rules (see :func:`famwidget.deconvnet`).

    After :meth:`fit`: ``layers``, ``sizes`` (channels per layer), ``classes`` ``(C,)`` and
    ``weights`` ``(D,C)`` float64, ``D = sum(sizes)``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        tau: float = 10.0,
        *,
        top_k: int = 3,
        relu: str = "guided",
        stride_fix: bool = True,
        bn: str = "scale",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if relu not in RELU_RULES or bn not in BN_RULES:
            raise ValueError(f"relu must be one of {RELU_RULES} and bn one of {BN_RULES}")
        if isinstance(layers, str):
            layers = [layers]
        self.model = model
        self.layers: list[str] | None = None
        if layers is not None:
            self.layers = [resolve_layer(model, name)[0] for name in layers]
        self.tau = float(tau)
        self.top_k = int(top_k)
        self.relu, self.stride_fix, self.bn = relu, bool(stride_fix), bn
        self.sizes: list[int] | None = None
        self.classes: Tensor | None = None
        self.weights: Tensor | None = None

    # ---- features -------------------------------------------------------------------------

    def _forward(self, images: Tensor) -> tuple[Tensor, Any]:
        """Feature vectors ``(B,D)`` float32 and the model output for one batch ``(B,C,H,W)``."""
        images = images.to(model_device(self.model))
        if self.layers is None:
            self.layers = default_layers(self.model, images[:1])
        tap = _EnergyTap(self.model, self.layers)
        with preserved(self.model), torch.inference_mode(), tap:
            output = self.model(images)
        missing = [n for n in self.layers if n not in tap.energies]
        if missing:
            raise ValueError(f"layers {missing} did not run in the model's forward pass")
        energies = [tap.energies[n] for n in self.layers]
        sizes = [e.shape[1] for e in energies]
        if self.sizes is not None and sizes != self.sizes:
            raise ValueError(f"the layers have {sizes} channels, the fitted weights {self.sizes}")
        self.sizes = sizes
        return energy_features(energies).clone(), output

    def features(self, images: Tensor | Iterable, batch_size: int = 64) -> Tensor:
        """Feature vectors ``(N,D)`` float32 of ``images`` (a tensor or an iterable of batches)."""
        rows = [self._forward(x)[0] for x, _ in _batches(images, None, batch_size)]
        return torch.cat(rows)

    def feature_names(self) -> list[tuple[str, int]]:
        """``(layer, channel)`` of each of the ``D`` feature dimensions."""
        self._require(fitted=False)
        return [
            (name, c) for name, k in zip(self.layers, self.sizes, strict=True) for c in range(k)
        ]

    # ---- interpretation ---------------------------------------------------------------------

    def fit(
        self,
        images_or_dataloader: Tensor | Iterable,
        labels: Sequence[int] | Tensor | None = None,
        batch_size: int = 64,
        *,
        max_iter: int = 5000,
        tol: float = 1e-9,
        distributed: str = "auto",
    ) -> Interpreter:
        """Learn the relevant features of every class from labelled images; returns ``self``.

        Args:
            images_or_dataloader: ``(N,3,H,W)`` tensor, or an iterable of ``(images, labels)``
                batches (a DataLoader) or of image batches (then ``labels`` gives all N).
            labels: ``(N,)`` class indices (needed unless the batches carry them).
            batch_size: images per forward pass when a tensor is given.
            max_iter, tol: the lasso solver's limits (:func:`constrained_lasso_gram`).
            distributed: under ``torchrun`` (``torch.distributed`` initialised, more than one
                rank), ``"auto"`` gives each rank a disjoint part of the data (see
                :func:`rank_batches`), ``"sharded"`` takes the data each rank got as its own
                disjoint part, ``"off"`` fits each rank on its data alone. Outside torchrun
                all three fit on everything given.

        Only the lasso's sufficient statistics are kept (``XᵀX`` ``(D,D)``, ``XᵀY``, the count:
        :class:`GramStatistics`), summed batch by batch: the images are never all in memory.
        Under torchrun the ranks all-reduce them, so every rank ends with the fit of all the
        data, the same as one process's (every rank must call ``fit`` with the same data).
        """
        batches, reduce = rank_batches(images_or_dataloader, labels, batch_size, distributed)
        stats = GramStatistics()
        failure: BaseException | None = None
        try:
            for x, y in batches:
                if y is None:
                    raise ValueError(
                        "fit needs labels: pass labels= or batches of (images, labels)"
                    )
                if y.numel() != x.shape[0]:
                    raise ValueError(f"a batch has {x.shape[0]} images but {y.numel()} labels")
                stats.add(self._forward(x)[0], y)
        except Exception as error:
            if not reduce:
                raise
            failure = error
        if reduce:
            self.layers, self.sizes = stats.all_reduce((self.layers, self.sizes), failure)
        self.classes, self.weights = stats.solve(self.tau, max_iter=max_iter, tol=tol)
        return self

    def relevant_features(self, c: int) -> list[tuple[str, int, float]]:
        """``[(layer, channel, weight), ...]`` with non-zero weight for class ``c``, by |weight|."""
        w = self.weights[:, self._column(c)]
        names = self.feature_names()
        nonzero = w.nonzero()[:, 0]
        order = nonzero[w[nonzero].abs().argsort(descending=True, stable=True)]
        return [(*names[d], float(w[d])) for d in order.tolist()]

    def _require(self, fitted: bool = True) -> None:
        if self.sizes is None or (fitted and self.weights is None):
            raise ValueError("the Interpreter is not fitted yet: call .fit(images, labels) first")

    def _column(self, c: int) -> int:
        self._require()
        hits = (self.classes == int(c)).nonzero()
        if hits.numel() == 0:
            raise ValueError(f"class {c} was not in the fitted labels {self.classes.tolist()}")
        return int(hits[0, 0])

    # ---- explanation ------------------------------------------------------------------------

    def explain(
        self,
        images: Tensor,
        target: int | Sequence[int] | Tensor | None = None,
        batch_size: int = 64,
    ) -> Explanation:
        """Explain the class of each image with its ``top_k`` most relevant features.

        Args:
            images: ``(B,3,H,W)`` or ``(3,H,W)`` float tensor, preprocessed for the model.
            target: the class to explain, one int or one per image; ``None`` = the model's
                argmax when the model is a classifier (a 2-D output with a column for every
                fitted class), else the lasso's own prediction ``argmax_j x·W[:, j]``. A model
                prediction that was not among the fitted classes also falls back to the lasso's.
            batch_size: images per forward pass.

        Returns an Explanation with ``method="vebi"``; ``heatmap`` ``(B,H,W)`` (the pixelwise
        max of the feature maps); ``activations`` ``(B,top_k,H,W)`` the feature maps (zeros
        where an image has fewer features with ``r_i > 0``) and ``weights`` ``(B,top_k)`` their
        relevances; ``features`` ``[(layer, channel, relevance), ...]`` per image; ``scores``
        ``(B,)`` the lasso score ``x·W[:, c]``; ``options["classes"]`` the explained classes;
        ``degenerate`` the reason where an image's map is blank (no positive signal reached its
        pixels, e.g. guided backpropagation stopped at an activation; a warning says so too).
        """
        self._require()
        images = check_images(images).to(model_device(self.model))
        X, outputs = [], []
        for x, _ in _batches(images, None, batch_size):
            feats, output = self._forward(x)
            X.append(feats)
            outputs.append(output)
        X = torch.cat(X)
        W = self.weights.to(X.device, torch.float64)
        lasso_scores = X.double() @ W  # (B,C)
        columns, source = self._explained_columns(target, outputs, lasso_scores)
        relevance = self._relevance(X.double(), W[:, columns].T)  # (B,D)
        top = relevance.topk(min(self.top_k, relevance.shape[1]), dim=1)
        keep = top.values > 0
        names = self.feature_names()
        features = [
            [(*names[d], float(r)) for d, r, k in zip(ds, rs, ks, strict=True) if k]
            for ds, rs, ks in zip(
                top.indices.tolist(), top.values.tolist(), keep.tolist(), strict=True
            )
        ]
        maps = self._feature_maps(images, top.indices, keep, batch_size)
        weights = torch.where(keep, top.values, 0.0).float()
        if weights.shape[1] < self.top_k:
            pad = self.top_k - weights.shape[1]
            weights, maps = F.pad(weights, (0, pad)), F.pad(maps, (0, 0, 0, 0, 0, pad))
        layers = [n for n in self.layers if any(f[0] == n for fs in features for f in fs)]
        b = torch.arange(len(columns), device=X.device)
        heatmap = maps.amax(dim=1)
        explanation = Explanation(
            heatmap=heatmap,
            method="vebi",
            layer=", ".join(layers),
            target=source,
            activations=maps,
            weights=weights,
            scores=lasso_scores[b, columns].float(),
            features=features,
            options={
                "classes": self.classes.cpu()[columns.cpu()].tolist(),
                "tau": self.tau,
                "top_k": self.top_k,
                "relu": self.relu,
                "stride_fix": self.stride_fix,
                "bn": self.bn,
            },
        )
        return flag_degenerate(explanation, self._blank_reasons(heatmap, features))

    def _blank_reasons(self, heatmap: Tensor, features: list) -> list[str | None]:
        """Why an image's map is blank (all zero), per image; ``None`` where it is not."""
        blank = (heatmap.flatten(1).amax(dim=1) <= 0).tolist()
        reasons: list[str | None] = []
        for is_blank, feats in zip(blank, features, strict=True):
            if not is_blank:
                reasons.append(None)
            elif not feats:
                reasons.append("no feature has a positive relevance for the explained class")
            else:
                hint = " (relu='deconvnet' ignores the forward signs)" * (self.relu == "guided")
                reasons.append(
                    "no positive signal reached the pixels from its features: the "
                    f"{self.relu} rule stopped it on the way{hint}"
                )
        return reasons

    @staticmethod
    def _relevance(X: Tensor, w: Tensor) -> Tensor:
        """``r_i = x_i * w_i / sum_i w_i`` ``(B,D)`` for features ``X`` and class weights ``w``.

        Where ``sum_i w_i <= 0`` (a class whose weights are mostly negative) the denominator is
        ``sum_i |w_i|`` instead, so that a positive relevance still means evidence for the class.
        """
        total = w.sum(dim=1, keepdim=True)
        total = torch.where(total > 0, total, w.abs().sum(dim=1, keepdim=True).clamp_min(1e-30))
        return X * w / total

    def _explained_columns(
        self, target: Any, outputs: list[Any], lasso_scores: Tensor
    ) -> tuple[Tensor, str]:
        """Column of ``weights`` explained for each image ``(B,)``, and a description."""
        b = lasso_scores.shape[0]
        device = lasso_scores.device
        if target is not None:
            wanted = torch.as_tensor(target).long().flatten()
            if wanted.numel() == 1:
                wanted = wanted.expand(b)
            if wanted.numel() != b:
                raise ValueError(f"target must be one class or one per image ({b})")
            values = wanted.tolist()
            cols = torch.tensor([self._column(c) for c in values], device=device)
            if len(set(values)) == 1:
                return cols, f"class {values[0]}"
            return cols, "classes " + ", ".join(map(str, values))
        lasso = lasso_scores.argmax(dim=1)
        logits = [o[0] if isinstance(o, (tuple, list)) else o for o in outputs]
        if not all(isinstance(o, Tensor) and o.dim() == 2 for o in logits):
            return lasso, "lasso argmax"
        logits = torch.cat(logits)
        if logits.shape[1] <= int(self.classes.max()):
            return lasso, "lasso argmax"
        predicted = logits.argmax(dim=1).to(device)
        match = predicted[:, None] == self.classes.to(device)[None]  # (B,C)
        cols = torch.where(match.any(dim=1), match.float().argmax(dim=1), lasso)
        return cols, "Predicted()"

    def _feature_maps(
        self, images: Tensor, indices: Tensor, keep: Tensor, batch_size: int
    ) -> Tensor:
        """Deconvnet maps ``(B,k,H,W)`` of the features ``indices`` ``(B,k)`` (0 where not kept)."""
        b, k = indices.shape
        names = self.feature_names()
        pairs = [(i, j) for i in range(b) for j in range(k) if keep[i, j]]
        maps = torch.zeros(b, k, *images.shape[-2:], device=images.device)
        if pairs:
            chosen = [names[int(indices[i, j])] for i, j in pairs]
            flat = self._visualize(images, [i for i, _ in pairs], chosen, batch_size)
            for (i, j), m in zip(pairs, flat, strict=True):
                maps[i, j] = m
        return maps

    def _visualize(
        self,
        images: Tensor,
        which: list[int],
        features: list[tuple[str, int]],
        batch_size: int,
    ) -> Tensor:
        """Deconvnet heatmaps ``(M,H,W)``: feature ``features[m]`` on image ``images[which[m]]``."""
        deconv = Deconvnet(self.model, stride_fix=self.stride_fix, relu=self.relu, bn=self.bn)
        out = torch.zeros(len(which), *images.shape[-2:], device=images.device)
        for layer in dict.fromkeys(name for name, _ in features):
            rows = [m for m, (name, _) in enumerate(features) if name == layer]
            for i in range(0, len(rows), batch_size):
                part = rows[i : i + batch_size]
                batch = images[torch.tensor([which[m] for m in part], device=images.device)]
                channels = [features[m][1] for m in part]
                out[torch.tensor(part, device=out.device)] = deconv.heatmap(batch, layer, channels)
        return out

    def average_visualizations(
        self,
        c: int,
        images: Tensor | Iterable,
        labels: Sequence[int] | Tensor | None = None,
        top_n: int = 5,
        *,
        max_features: int | None = None,
        batch_size: int = 64,
    ) -> list[tuple[str, int, float, Tensor]]:
        """Interpret class ``c``: one average deconvnet map per relevant feature.

        For each relevant feature of ``c`` (by |weight|, at most ``max_features``): the ``top_n``
        images of class ``c`` with the highest value of that feature, the feature visualised on
        each, and the mean of those min-max normalised maps.

        Returns ``[(layer, channel, weight, map), ...]`` with ``map`` ``(H,W)`` float32.
        """
        if top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {top_n}")
        relevant = self.relevant_features(c)[:max_features]
        kept, rows = [], []
        for x, y in _batches(images, labels, batch_size):
            if y is None:
                raise ValueError("average_visualizations needs the images' labels")
            mine = y.to(x.device) == int(c)
            if bool(mine.any()):
                kept.append(x[mine].to(model_device(self.model)))
                rows.append(self._forward(kept[-1])[0])
        if not kept:
            raise ValueError(f"no image of class {c} among the images given")
        class_images, X = torch.cat(kept), torch.cat(rows)
        index = {name: d for d, name in enumerate(self.feature_names())}
        which, feats = [], []
        for layer, channel, _ in relevant:
            best = X[:, index[(layer, channel)]].topk(min(top_n, X.shape[0])).indices.tolist()
            which += best
            feats += [(layer, channel)] * len(best)
        maps = self._visualize(class_images, which, feats, batch_size) if which else None
        result, start = [], 0
        n = min(top_n, X.shape[0])
        for layer, channel, weight in relevant:
            result.append((layer, channel, weight, maps[start : start + n].mean(dim=0).cpu()))
            start += n
        return result

    # ---- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the fitted interpretation to ``path`` (safetensors; settings in its metadata)."""
        from safetensors.torch import save_file

        self._require()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "layers": self.layers,
            "sizes": self.sizes,
            "tau": self.tau,
            "top_k": self.top_k,
            "relu": self.relu,
            "stride_fix": self.stride_fix,
            "bn": self.bn,
        }
        tensors = {
            "weights": self.weights.detach().cpu().contiguous(),
            "classes": self.classes.detach().cpu().contiguous(),
        }
        save_file(tensors, str(path), metadata={"famwidget": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path, model: nn.Module) -> Interpreter:
        """An Interpreter for ``model`` from a file written by :meth:`save`."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("famwidget", "{}"))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a famwidget Interpreter file")
            weights, classes = f.get_tensor("weights"), f.get_tensor("classes")
        interp = cls(
            model,
            layers=meta["layers"],
            tau=meta["tau"],
            top_k=meta["top_k"],
            relu=meta["relu"],
            stride_fix=meta["stride_fix"],
            bn=meta["bn"],
        )
        if sum(meta["sizes"]) != weights.shape[0]:
            raise ValueError(f"{path} is inconsistent: {meta['sizes']} vs {weights.shape}")
        interp.sizes, interp.weights, interp.classes = list(meta["sizes"]), weights, classes
        return interp

    def __repr__(self) -> str:
        state = "unfitted" if self.weights is None else f"{len(self.classes)} classes"
        return f"Interpreter({type(self.model).__name__}, tau={self.tau}, {state})"


def vebi(
    model: nn.Module,
    images: Tensor,
    *,
    interpreter: Interpreter | None = None,
    target: ClassLogit | None = None,
    output_key: object = None,
    autocast: object = None,
    batch_size: int = 32,
) -> Explanation:
    """``fw.explain(model, images, method="vebi", interpreter=fitted)``: the interpretation
    method as a registered method (see :meth:`Interpreter.explain`).

    ``target``: ``None`` (the predicted class) or ``ClassLogit(c)``; ``output_key`` and
    ``precision`` do not apply (the Interpreter reads its own layers in fp32).
    """
    if not isinstance(interpreter, Interpreter):
        raise ValueError(
            "method 'vebi' needs interpreter=, a fitted fw.Interpreter "
            f"(got {type(interpreter).__name__})"
        )
    if interpreter.model is not model:
        raise ValueError("interpreter= was fitted on another model than the one explained")
    if target is not None and not isinstance(target, ClassLogit):
        raise TypeError(
            f"method 'vebi' explains a class: target must be None or ClassLogit(c), not {target}"
        )
    classes = None if target is None else target.c
    return interpreter.explain(images, classes, batch_size=batch_size)


METHODS = [
    Method(
        "vebi",
        vebi,
        None,
        needs_layer=False,
        requires=("interpreter",),
        summary="relevant channels shown by deconvnet (visual explanation by interpretation)",
    )
]
