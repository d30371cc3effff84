"""How good is a saliency map? Faithfulness, localisation and sanity metrics, plus cost.

Every function works on a whole batch at once, on the model's device (CPU or CUDA; images are
moved there) or, for the model-free ones, on the device of the heatmaps.
Shapes: ``images`` ``(B,C,H,W)`` preprocessed for the model; ``heatmaps`` ``(B,h,w)``
non-negative (any size: resized bilinearly to the image or mask size); ``masks`` ``(B,H,W)``
bool ground truth.

- :func:`deletion_insertion`: remove / reveal pixels by decreasing heat and watch the score
  (Petsiuk et al., RISE): a faithful map makes the score fall fast (low deletion AUC) and rise
  fast (high insertion AUC).
- :func:`average_drop_increase`: the score of ``x * heatmap`` against that of ``x``
  (Chattopadhyay et al., Grad-CAM++).
- :func:`pointing_game`, :func:`mass_in_mask`: does the map land on the ground-truth parts.
- :func:`randomisation_check`: cascading weight randomisation (Adebayo et al., "Sanity checks
  for saliency maps"): a map that barely changes when the weights are destroyed explains the
  image, not the model.
- :func:`measure`: wall time and peak memory of a block of code.

Scores. The model-based metrics measure a score per image. ``score`` is a ``fw.targets``
object, bound to the model's output on the clean images exactly as the explainers bind it
(``Predicted()`` keeps the clean prediction, ``Embedding()`` gives ``cos(f(x'), f(x))``,
:class:`Probability` the softmax probability of the bound class), or a callable: ``fn(output)
-> (N,)`` when the score does not depend on which image a row came from, ``fn(output, index)
-> (N,)`` otherwise (``index`` ``(N,)`` is the source image of each row, as in
``Bound.score``).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import functools
import inspect
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .api import model_device
from .explainers.scorefam import gaussian_blur
from .maps import upsample
from .tap import preserved
from .targets import Bound, OutputKey, Predicted, Target

ScoreFn = Callable[[Any, Tensor], Tensor]
"""``fn(output, index) -> (N,)``: the score of N model outputs whose source images are ``index``."""

BASELINES = ("blur", "zeros", "mean")

BLUR_SIGMA = 0.1
"""Sigma of the ``baseline="blur"`` image, as a fraction of ``min(H, W)`` (11 px at 112).

Twice Score-FAM's masking blur: a deletion baseline must remove the parts' shape and most of
their texture, not only their finest detail."""

PIXEL_BUDGET = {"cpu": 64 * 112 * 112, "cuda": 1024 * 224 * 224}
"""Automatic batch of the perturbation metrics: this many pixels per forward pass."""


# ----------------------------------------------------------------------------- scores


class _ProbabilityBound(Bound):
    def __init__(self, inner: Bound, key: OutputKey) -> None:
        super().__init__(key)
        self.inner = inner

    def scalar(self, output: object) -> Tensor:
        f = self.features(output)
        return self.inner.probability(output, torch.arange(len(f), device=f.device))

    def score(self, output: object, index: Tensor) -> Tensor:
        return self.inner.probability(output, index)


class Probability(Target):
    """The softmax probability of a class target's class (default ``Predicted()``).

    Probabilities lie in (0, 1], so the scores of perturbed copies can be divided by the
    clean score (what the perturbation metrics do); logits can be negative.
    """

    kind = "class"

    def __init__(self, target: Target | None = None) -> None:
        self.target = Predicted() if target is None else target
        if getattr(self.target, "kind", None) != "class":
            raise TypeError(f"Probability needs a class target, got {self.target!r}")

    def bind(self, output: object, key: OutputKey = None) -> Bound:
        return _ProbabilityBound(self.target.bind(output, key), key)

    def __repr__(self) -> str:
        return f"Probability({self.target!r})"


def bind_score(
    score: Target | Callable[..., Tensor], clean_output: object, output_key: OutputKey = None
) -> ScoreFn:
    """Turn ``score`` (see the module docstring) into ``fn(output, index) -> (N,)``.

    A target is bound to ``clean_output``; a one-argument callable ignores ``index``.
    """
    if isinstance(score, Target):
        bound = score.bind(clean_output, output_key)
        return bound.score
    if not callable(score):
        raise TypeError(
            "score must be a famwidget target (Embedding(), Predicted(), Probability(), ...) or "
            f"a callable output -> (N,) / (output, index) -> (N,), not {type(score).__name__}"
        )
    if _positional_arity(score) >= 2:
        return score
    return lambda output, index: score(output)


def _positional_arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in kinds and p.default is inspect.Parameter.empty for p in params)


def _checked(values: Tensor, n: int) -> Tensor:
    if not isinstance(values, Tensor) or values.shape != (n,):
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"the score must give one number per image, shape ({n},); got {got}")
    return values.detach().float()


@torch.inference_mode()
def _clean(
    model: nn.Module, images: Tensor, score: Target | Callable[..., Tensor], key: OutputKey
) -> tuple[ScoreFn, Tensor]:
    """Bind ``score`` on the clean images ``(B,C,H,W)``: ``(fn, clean scores (B,))``."""
    output = model(images)
    fn = bind_score(score, output, key)
    index = torch.arange(len(images), device=images.device)
    return fn, _checked(fn(output, index), len(images))


@torch.inference_mode()
def _score_copies(
    model: nn.Module,
    make: Callable[[Tensor], Tensor],
    index: Tensor,
    fn: ScoreFn,
    batch_size: int,
) -> Tensor:
    """Scores ``(N,)`` of N copies; ``make(rows)`` builds copies ``rows`` ``(n,)`` as a batch.

    At most ``batch_size`` copies exist at a time; the scores stay on the device.
    """
    out = torch.empty(len(index), device=index.device)
    for start in range(0, len(index), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(index)), device=index.device)
        out[rows] = _checked(fn(model(make(rows)), index[rows]), len(rows))
    return out


def auto_batch(images: Tensor) -> int:
    """Copies per forward pass for the perturbation metrics (``PIXEL_BUDGET`` of the device)."""
    budget = PIXEL_BUDGET["cuda" if images.device.type == "cuda" else "cpu"]
    return max(1, budget // (images.shape[-2] * images.shape[-1]))


# ----------------------------------------------------------------------------- maps


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B,h,w)`` → ``(B,H,W)`` float32 (bilinear, ``align_corners=False``; as is if equal)."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B,h,w), got shape {tuple(maps.shape)}")
    return upsample(maps.detach(), size)


def baseline_image(images: Tensor, baseline: str) -> Tensor:
    """What removed pixels become: ``(B,C,H,W)``.

    ``"blur"``: the image blurred (Gaussian, sigma ``BLUR_SIGMA * min(H, W)``); ``"zeros"``:
    zero, the dataset mean for normalised inputs; ``"mean"``: each image's mean colour.
    """
    if baseline == "zeros":
        return torch.zeros_like(images)
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if baseline == "blur":
        return gaussian_blur(images, max(0.5, BLUR_SIGMA * min(images.shape[-2:])))
    raise ValueError(f"baseline must be one of {list(BASELINES)}, got {baseline!r}")


def heat_ranks(heatmaps: Tensor, seed: int = 0) -> Tensor:
    """Rank of every pixel by decreasing heat: ``(B,h,w)`` → ``(B,h*w)`` long, 0 = hottest.

    Ties (the flat zero regions of ReLU'd maps) are broken by one random pixel permutation
    (``seed``), shared by the batch, so no raster order is favoured.
    """
    b, n = heatmaps.shape[0], heatmaps.shape[-2] * heatmaps.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator).to(heatmaps.device)
    flat = heatmaps.reshape(b, n)[:, perm]
    order = perm[flat.argsort(dim=1, descending=True, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=order.device).expand(b, n))
    return ranks


# ----------------------------------------------------------------------------- deletion / insertion


def deletion_insertion_curves(
    model: nn.Module,
    images: Tensor,
    heatmaps: Tensor,
    score_fn: Target | Callable[..., Tensor],
    steps: int = 16,
    baseline: str = "blur",
    *,
    normalise: bool = True,
    batch_size: int | None = None,
    output_key: OutputKey = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Deletion and insertion curves: ``(fractions (S+1,), deletion (B,S+1), insertion (B,S+1))``.

    Pixels are ranked by decreasing heat (:func:`heat_ranks`); at step ``j`` the top
    ``round(j * H*W / steps)`` pixels are replaced by the baseline (deletion) or are the only
    ones shown over the baseline (insertion), all channels at once. Deletion starts at the clean
    image and ends at the baseline, insertion the reverse; the two end points are run once.
    All ``2 (steps - 1)`` inner copies of all images form one work list, run in batches of
    ``batch_size`` copies (default :func:`auto_batch`) under ``torch.inference_mode()``.

    ``normalise=True`` divides every image's curve by its clean score, so deletion starts and
    insertion ends at 1: right for positive scores (``Probability()``, and ``Embedding()``,
    whose clean cosine is 1 anyway); an image whose clean score is not positive gets NaN.
    ``normalise=False`` keeps raw scores (logits).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    images = _check_batch(model, images, heatmaps)
    h, w = images.shape[-2:]
    with preserved(model):
        fn, clean = _clean(model, images, score_fn, output_key)
        base = baseline_image(images, baseline)
        index = torch.arange(len(images), device=images.device)
        base_scores = _score_copies(model, lambda r: base[r], index, fn, len(images))
        ranks = heat_ranks(resize_maps(heatmaps.to(images.device), (h, w)), seed).view(-1, 1, h, w)
        counts = torch.round(torch.linspace(0, h * w, steps + 1, device=images.device)).long()
        # work list, row r = (image r // 2(S-1), step (r // 2) % (S-1) + 1, insertion r % 2)
        rows_per_image = 2 * (steps - 1)
        image = torch.arange(len(images) * rows_per_image, device=images.device) // rows_per_image

        def make(rows: Tensor) -> Tensor:
            step = (rows // 2) % (steps - 1) + 1
            insert = (rows % 2 == 1).view(-1, 1, 1, 1)
            chosen = ranks[image[rows]] < counts[step].view(-1, 1, 1, 1)
            show = chosen == insert  # deletion shows the unchosen pixels, insertion the chosen
            return torch.where(show, images[image[rows]], base[image[rows]])

        inner = _score_copies(model, make, image, fn, batch_size or auto_batch(images))
    inner = inner.view(len(images), steps - 1, 2)
    deletion = torch.cat([clean[:, None], inner[..., 0], base_scores[:, None]], dim=1)
    insertion = torch.cat([base_scores[:, None], inner[..., 1], clean[:, None]], dim=1)
    if normalise:
        scale = torch.where(clean > 0, clean, torch.full_like(clean, float("nan")))[:, None]
        deletion, insertion = deletion / scale, insertion / scale
    fractions = counts.float() / (h * w)
    return fractions, deletion, insertion


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    heatmaps: Tensor,
    score_fn: Target | Callable[..., Tensor],
    steps: int = 16,
    baseline: str = "blur",
    **options: Any,
) -> tuple[Tensor, Tensor]:
    """Deletion and insertion AUCs ``(B,)``, ``(B,)``: trapezoid over the fraction in [0, 1].

    Lower deletion and higher insertion is better. See :func:`deletion_insertion_curves` for
    the procedure and ``options`` (``normalise``, ``batch_size``, ``output_key``, ``seed``).
    """
    fractions, deletion, insertion = deletion_insertion_curves(
        model, images, heatmaps, score_fn, steps, baseline, **options
    )
    return torch.trapezoid(deletion, fractions), torch.trapezoid(insertion, fractions)


def _check_batch(model: nn.Module, images: Tensor, heatmaps: Tensor) -> Tensor:
    """Check the shapes; the images moved to the model's device."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B,C,H,W), got shape {tuple(images.shape)}")
    if heatmaps.dim() != 3 or len(heatmaps) != len(images):
        raise ValueError(
            f"heatmaps must be (B,h,w) with B={len(images)} like the images, "
            f"got shape {tuple(heatmaps.shape)}"
        )
    return images.to(model_device(model))


# ----------------------------------------------------------------------------- average drop


def average_drop_increase(
    model: nn.Module,
    images: Tensor,
    heatmaps: Tensor,
    score_fn: Target | Callable[..., Tensor],
    *,
    baseline: str = "zeros",
    output_key: OutputKey = None,
) -> tuple[Tensor, Tensor]:
    """Average drop and increase in confidence (Chattopadhyay et al.): ``(B,)`` float and bool.

    The explanation map is ``E = x * heatmap`` (``baseline="zeros"``, the paper's; ``"blur"`` /
    ``"mean"`` blend toward that image instead: ``b + heatmap (x - b)``). With ``Y`` the clean
    score and ``O`` the score of ``E``: ``drop = max(0, Y - O) / Y`` (a fraction; the paper's
    "Average Drop %" is 100x its mean) and ``increase = O > Y`` (its mean is the "% Increase in
    Confidence"). Lower drop and more increases are better. A heatmap of ones gives ``E = x``:
    drop 0, no increase. ``Y`` must be positive (probabilities, cosines); otherwise NaN.
    """
    images = _check_batch(model, images, heatmaps)
    with preserved(model):
        fn, clean = _clean(model, images, score_fn, output_key)
        heat = resize_maps(heatmaps.to(images.device), images.shape[-2:])[:, None]
        base = baseline_image(images, baseline)
        index = torch.arange(len(images), device=images.device)
        masked = _score_copies(
            model, lambda r: base[r] + heat[r] * (images[r] - base[r]), index, fn, len(images)
        )
    positive = clean > 0
    drop = torch.relu(clean - masked) / torch.where(positive, clean, torch.ones_like(clean))
    drop = torch.where(positive, drop, torch.full_like(drop, float("nan")))
    return drop, masked > clean


# ----------------------------------------------------------------------------- localisation


def _map_and_mask(heatmaps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if masks.dim() != 3 or heatmaps.dim() != 3 or len(masks) != len(heatmaps):
        raise ValueError(
            f"heatmaps (B,h,w) and masks (B,H,W) must have the same B; got shapes "
            f"{tuple(heatmaps.shape)} and {tuple(masks.shape)}"
        )
    masks = masks.to(heatmaps.device).bool()
    return resize_maps(heatmaps, masks.shape[-2:]).clamp_min(0), masks


def dilate(masks: Tensor, radius: int) -> Tensor:
    """Masks ``(B,H,W)`` grown by ``radius`` pixels (a Euclidean disc); bool ``(B,H,W)``."""
    if radius <= 0:
        return masks.bool()
    t = torch.arange(-radius, radius + 1, device=masks.device, dtype=torch.float32)
    disc = ((t[:, None] ** 2 + t[None] ** 2) <= radius**2).float()[None, None]
    grown = F.conv2d(masks.float()[:, None], disc, padding=radius)
    return grown[:, 0] > 0.5


def pointing_game(heatmaps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """Does the hottest point fall on the mask (Zhang et al.)? ``(B,h,w)``, ``(B,H,W)`` → ``(B,)``.

    Returns bool hits. The heatmap is resized to the mask. Its maximal pixels (within 1e-6 of
    the maximum: a bilinearly upsampled peak spans a few pixels) must lie, at least half of
    them, within ``tolerance`` pixels of the mask (the paper uses 15 px at 224). A constant
    map has no point and an empty mask no target: both are misses.
    """
    heat, masks = _map_and_mask(heatmaps, masks)
    flat = heat.flatten(1)
    top = flat >= flat.amax(dim=1, keepdim=True) - 1e-6
    inside = dilate(masks, tolerance).flatten(1)
    share = (top & inside).sum(1).float() / top.sum(1).clamp_min(1)
    constant = (flat.amax(dim=1) - flat.amin(dim=1)) <= 1e-6
    return (share >= 0.5) & ~constant & masks.flatten(1).any(dim=1)


def mass_in_mask(heatmaps: Tensor, masks: Tensor) -> Tensor:
    """Share of the map's mass on the mask: ``sum(h m) / sum(h)``, ``(B,)`` in [0, 1].

    The heatmap is resized to the mask and negative values are clipped; an all-zero map gives 0.
    A uniform map scores the mask's area fraction, the chance level.
    """
    heat, masks = _map_and_mask(heatmaps, masks)
    total = heat.sum(dim=(1, 2))
    inside = (heat * masks).sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


# ----------------------------------------------------------------------------- randomisation


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of maps: ``(B,...)``, ``(B,...)`` → ``(B,)`` float32.

    Ties get their average rank (exact, vectorised; ranks in float64). A constant map
    correlates 0 with anything.
    """
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-30)
    corr = (ra * rb).sum(1) / denom
    valid = (ra.norm(dim=1) > 0) & (rb.norm(dim=1) > 0)
    return torch.where(valid, corr, torch.zeros_like(corr)).float()


def average_ranks(x: Tensor) -> Tensor:
    """Ranks ``(B,N)`` → ``(B,N)`` float64, 0-based, ties sharing their average rank."""
    x = x.detach().double().contiguous()
    s = x.sort(dim=1).values
    lo = torch.searchsorted(s, x, right=False)
    hi = torch.searchsorted(s, x, right=True)
    return (lo + hi - 1).double() / 2


def cascade_stages(model: nn.Module) -> list[str]:
    """Default randomisation stages, top (output) first: the model's children that hold
    parameters, with a top-level ``nn.Sequential`` / ``nn.ModuleList`` split into its children.
    """
    stages: list[str] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            stages += [f"{name}.{n}" for n, c in child.named_children() if _has_params(c)]
        elif _has_params(child):
            stages.append(name)
    if not stages and _has_params(model):
        raise ValueError("the model keeps parameters outside submodules; pass layers= explicitly")
    return stages[::-1]


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def reinitialise(module: nn.Module) -> None:
    """Re-draw the weights of ``module`` and everything under it, in place.

    Modules with ``reset_parameters`` use PyTorch's own initialisation (Kaiming-uniform
    convolutions and linears; BatchNorm back to weight 1, bias 0 and fresh running statistics);
    other parameters are drawn from a normal distribution with their own standard deviation.
    """
    with torch.no_grad():
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
                continue
            for p in m.parameters(recurse=False):
                std = float(p.float().std()) if p.numel() > 1 else float(p.abs().mean())
                p.normal_(0.0, std if std > 0 else 0.02)


def randomisation_check(
    model: nn.Module,
    images: Tensor,
    explain_fn: Callable[[nn.Module, Tensor], Any],
    layers: Sequence[str] | None = None,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018).

    ``explain_fn(model, images)`` returns heatmaps ``(B,H,W)`` (or an Explanation). The
    original maps are computed on ``model``; then, on a deep copy (the passed-in model is never
    modified), the ``layers`` (names from ``named_modules()``, top first; default
    :func:`cascade_stages`) are re-initialised one after the other, cumulatively, and after each
    the maps are recomputed and compared by Spearman rank correlation. Re-initialisation is
    seeded (``seed``) inside a forked RNG: the global random state is untouched.

    Returns ``{"layers": [name, ...] (L), "correlation": (L,B) tensor, "mean": (L,) tensor,
    "final": (B,) after every stage}``. A faithful method's maps decorrelate: low values.
    """
    original = _heatmap(explain_fn(model, images))
    stages = list(cascade_stages(model) if layers is None else layers)
    shadow = copy.deepcopy(model)
    modules = dict(shadow.named_modules())
    missing = [name for name in stages if name not in modules]
    if missing:
        raise ValueError(f"layers {missing} are not modules of the model; valid: {list(modules)}")
    cuda = sorted({p.device.index or 0 for p in shadow.parameters() if p.device.type == "cuda"})
    rows = []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for name in stages:
            reinitialise(modules[name])
            rows.append(spearman(original, _heatmap(explain_fn(shadow, images))))
    correlation = torch.stack(rows) if rows else original.new_zeros(0, len(original))
    return {
        "layers": stages,
        "correlation": correlation,
        "mean": correlation.mean(dim=1),
        "final": correlation[-1] if rows else None,
    }


def _heatmap(result: Any) -> Tensor:
    heat = getattr(result, "heatmap", result)
    if not isinstance(heat, Tensor) or heat.dim() != 3:
        raise TypeError("explain_fn must return heatmaps (B,H,W) or an Explanation")
    return heat.detach().float()


# ----------------------------------------------------------------------------- time and memory


@dataclass
class Usage:
    """What :func:`measure` found: ``seconds`` of wall time, ``peak_bytes`` above the start
    (``None`` where it cannot be measured) and ``what`` was measured."""

    seconds: float = float("nan")
    peak_bytes: int | None = None
    what: str = ""


@contextlib.contextmanager
def measure(device: torch.device | str = "cpu") -> Iterator[Usage]:
    """Time a block and its peak memory above what was in use when it started.

    - CUDA: ``torch.cuda.max_memory_allocated`` minus the allocated memory at the start (the
      tensors the block allocates on that device, not the caching allocator's reserve); the
      device is synchronised at both ends so the time includes the queued kernels.
    - CPU on Linux: the process's peak resident memory (``VmHWM``, reset at the start through
      ``/proc/self/clear_refs``) minus its resident memory at the start, after ``malloc_trim``
      returned freed heap memory to the system. It counts every allocation of the process
      (torch's and Python's, and other threads'), at page granularity.
    - CPU elsewhere: the growth of ``getrusage`` ``ru_maxrss``, the lifetime peak, which only
      grows when the block sets a new record: a lower bound.

    ``with measure(device) as usage: ...`` then read ``usage.seconds`` / ``usage.peak_bytes``.
    """
    device = torch.device(device)
    usage = Usage()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
        usage.what = "CUDA max_memory_allocated above the start"
    else:
        _malloc_trim()
        hwm = _reset_peak_rss()
        start_bytes = _proc_status("VmRSS") if hwm else _max_rss()
        usage.what = (
            "peak resident memory above the start (VmHWM)"
            if hwm
            else "growth of the lifetime peak RSS (lower bound)"
        )
    start = time.perf_counter()
    try:
        yield usage
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
        else:
            peak = _proc_status("VmHWM") if hwm else _max_rss()
        usage.seconds = time.perf_counter() - start
        if peak is not None and start_bytes is not None:
            usage.peak_bytes = max(0, peak - start_bytes)


def _proc_status(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or ``None`` off Linux."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (Linux >= 4.0); whether it worked."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status("VmHWM") is not None


def _max_rss() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _malloc_trim() -> None:
    """Give freed heap memory back to the system (glibc), so the start RSS is not inflated."""
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _libc_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


__all__ = [
    "BASELINES",
    "Probability",
    "Usage",
    "average_drop_increase",
    "average_ranks",
    "baseline_image",
    "bind_score",
    "cascade_stages",
    "deletion_insertion",
    "deletion_insertion_curves",
    "dilate",
    "heat_ranks",
    "mass_in_mask",
    "measure",
    "pointing_game",
    "randomisation_check",
    "reinitialise",
    "spearman",
]
