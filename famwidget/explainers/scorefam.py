"""Score-FAM (seed 000) and Score-CAM: channel weights from the scores of masked copies.

    H_k  = minmax(U(A_k))                   # constant channels are skipped: weight 0
    x_k  = x_b + H_k (x - x_b)              # masking="multiply": x_b = 0, i.e. x * H_k
    s_k  = score(f(x_k))                    # Embedding(): cos(f(x_k), f(x)); class: its logit
    beta = weights(s)                       # "softmax" over k | "raw" | "relu-baseline"
    M    = minmax(U(ReLU(sum_k beta_k A_k)))

Score-FAM and Score-CAM are the same computation with different targets (``Embedding()`` /
``Predicted()`` by default). How it runs:

- one clean forward pass records ``A`` (the layer tap is then removed) and binds the target;
- the (image, channel) pairs with a non-constant channel form one work list, ordered by rank of
  activation energy ``sum_ij A_k`` (every image's strongest channel first, then every image's
  second, ...), so partial maps improve fastest and a batch may mix images;
- the list is cut into batches; each batch builds its masked copies, runs the model under
  ``torch.inference_mode()`` (and autocast when asked) and writes the scores into a device
  tensor: nothing is synchronised to the host per copy, and at most one batch of copies exists;
- after each batch ``on_progress(done, total, partial)`` gets the map of the channels done so
  far (the same formula restricted to them); the last partial map is the final map;
- a CUDA out-of-memory error halves the batch size and the work goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..budget import DEFAULT_MAX_SECONDS, check_budget
from ..explanation import Explanation, flag_degenerate
from ..inputs import check_class_target
from ..layout import Layout, Reader
from ..maps import RELATIVE_EPS, cam, cam_reasons, gaussian_kernel, minmax, upsample
from ..method import Method
from ..tap import Tap, preserved
from ..targets import Bound, Embedding, OutputKey, Predicted, Target
from .inference_copy import agrees, inference_copy

MASKINGS = ("multiply", "mean", "blur")
WEIGHT_RULES = ("softmax", "raw", "relu-baseline")
SCORES = ("target", "probability")
CONVENTIONS = {"library": ("target", "softmax"), "paper": ("probability", "raw")}

CONSTANT_TOLERANCE = RELATIVE_EPS
"""A channel is constant (skipped, weight 0) when ``max - min <= 1e-5 * max|A_k|``: the same
relative test as :func:`famwidget.maps.minmax`, which would turn it into an all-zero mask."""

SOFTMAX_SPREAD = 1e-4
"""Softmax weights of scores that differ by less than this are equal within 0.01%: the map is
then the plain channel sum, whatever the target; it is flagged ``degenerate``."""

BLUR_SIGMA = 0.05
"""Gaussian sigma of the ``masking="blur"`` baseline, as a fraction of ``min(H, W)``."""

CPU_PIXEL_BUDGET = 8 * 224 * 224
"""Automatic CPU batch: this many pixels per batch (8 copies at 224x224).

``python -m famwidget.bench`` on a 2-core AVX512-BF16 CPU: ResNet-18 throughput is as high at 8
copies as at 16-64 (fp32) or higher (bf16: 212-219 vs 190-195 images/s); small batches also
stream partial maps more often and keep memory low."""

CUDA_MAX_BATCH = 256
CUDA_BYTES_PER_INPUT_BYTE = 64
"""Automatic CUDA batch: assume a copy needs 64x its input size in working memory, use a
quarter of the free memory, at most 256 copies; an out-of-memory error still halves it."""

ProgressFn = Callable[[int, int, Explanation], None]
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass(frozen=True)
class Rules:
    """What a run does, resolved from the options (see :func:`score_fam`)."""

    masking: str
    score: str
    weights: str
    convention: str | None


def resolve_rules(
    masking: str | Tensor, score: str | None, weights: str | None, convention: str | None
) -> Rules:
    """Check the option values; ``convention`` fills ``score``/``weights`` that were not given."""
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(
            f"convention must be None or one of {list(CONVENTIONS)} ('library': target score "
            "then softmax over channels; 'paper': class probability as the weight), "
            f"got {convention!r}"
        )
    base_score, base_weights = CONVENTIONS[convention or "library"]
    score = base_score if score is None else score
    weights = base_weights if weights is None else weights
    if score not in SCORES:
        raise ValueError(f"score must be one of {list(SCORES)}, got {score!r}")
    if weights not in WEIGHT_RULES:
        raise ValueError(f"weights must be one of {list(WEIGHT_RULES)}, got {weights!r}")
    if isinstance(masking, Tensor):
        name = "baseline-tensor"
    elif masking in ("multiply", "zeros"):
        name = "multiply"
    elif masking in MASKINGS:
        name = masking
    else:
        raise ValueError(
            f"masking must be one of {list(MASKINGS)} (or 'zeros', the same as 'multiply') "
            f"or a baseline image tensor (3,H,W)/(B,3,H,W), got {masking!r}"
        )
    return Rules(name, score, weights, convention)


def baseline_images(images: Tensor, masking: str | Tensor) -> Tensor | None:
    """The baseline ``x_b`` ``(B,C,H,W)`` the masked copies blend towards; ``None`` for zeros.

    ``"multiply"``/``"zeros"``: ``x * H_k`` (zero is the dataset mean for normalised inputs);
    ``"mean"``: each image's mean colour; ``"blur"``: the image blurred (Gaussian, sigma
    ``BLUR_SIGMA * min(H, W)``); a tensor: that image, broadcast over the batch.
    """
    if isinstance(masking, Tensor):
        if not masking.is_floating_point():
            raise TypeError(f"a baseline tensor must be floating point, got {masking.dtype}")
        try:
            shape = torch.broadcast_shapes(masking.shape, images.shape)
        except RuntimeError:
            shape = None
        if shape != images.shape:
            raise ValueError(
                f"baseline tensor of shape {tuple(masking.shape)} does not broadcast to the "
                f"images {tuple(images.shape)}; give (C,H,W) or (B,C,H,W)"
            )
        return masking.detach().to(images).expand_as(images)
    if masking in ("multiply", "zeros"):
        return None
    if masking == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    sigma = max(BLUR_SIGMA * min(images.shape[-2:]), 0.5)
    return gaussian_blur(images, sigma)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B,C,H,W)`` with replicated borders (any image size)."""
    kernel = gaussian_kernel(sigma, images.device)
    radius = kernel.numel() // 2
    channels = images.shape[1]
    x = F.pad(images.float(), (radius, radius, 0, 0), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    x = F.pad(x, (0, 0, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return x.to(images.dtype)


def auto_batch_size(images: Tensor, total: int) -> int:
    """Masked copies per batch when ``batch_size=None``: fits the device, at most ``total``."""
    height, width = images.shape[-2:]
    if images.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(images.device)
        per_copy = images[0].numel() * images.element_size() * CUDA_BYTES_PER_INPUT_BYTE
        size = min(CUDA_MAX_BATCH, free // 4 // per_copy)
    else:
        size = CPU_PIXEL_BUDGET // (height * width)
    return int(max(1, min(size, total)))


def constant_channels(activations: Tensor) -> Tensor:
    """``(B,K)`` True where channel ``A_k`` of ``activations`` ``(B,K,h,w)`` is not constant."""
    flat = activations.flatten(2)
    span = flat.amax(dim=2) - flat.amin(dim=2)
    return span > CONSTANT_TOLERANCE * flat.abs().amax(dim=2)


def work_list(
    activations: Tensor, max_channels: int | None = None, among: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The (image, channel) pairs to score, strongest channels first.

    ``activations`` ``(B,K,h,w)`` → ``images`` ``(N,)``, ``channels`` ``(N,)`` (rank-major: the
    top channel of every image, then the second, ...; within an image, descending
    ``sum_ij A_k``) and ``valid`` ``(B,K)``, False for constant channels, which are left out.
    ``max_channels``: only each image's ``max_channels`` strongest channels are listed;
    ``among`` ``(B,K)`` bool: only these channels are listed (``budget``'s representatives).
    One host synchronisation (the size N).
    """
    batch, k = activations.shape[:2]
    flat = activations.flatten(2)
    valid = constant_channels(activations)
    listed = valid if among is None else valid & among
    energy = flat.sum(dim=2).masked_fill(~listed, float("-inf"))
    order = energy.argsort(dim=1, descending=True, stable=True)
    ranks = torch.arange(k, device=activations.device)[:, None]
    counts = listed.sum(dim=1)
    if max_channels is not None:
        counts = counts.clamp(max=max_channels)
    keep = ranks < counts[None, :]
    images = torch.arange(batch, device=activations.device).expand(k, batch)[keep]
    return images, order.t()[keep], valid


def _grid_masks(activations: Tensor) -> tuple[Tensor, Tensor]:
    """``minmax(A_k)`` on the layer's grid ``(B,K,h*w)``; the energies ``sum_ij A_k`` ``(B,K)``."""
    flat = activations.flatten(2).float()
    low = flat.amin(dim=2, keepdim=True)
    span = (flat.amax(dim=2, keepdim=True) - low).clamp_min(torch.finfo(torch.float32).tiny)
    return (flat - low) / span, flat.sum(dim=2)


def duplicate_channels(activations: Tensor, valid: Tensor) -> tuple[Tensor, Tensor] | None:
    """Channels whose masks are identical: ``assign`` ``(B,K)``, ``chosen`` ``(B,K)``, or None.

    Two channels whose maps on the layer's grid give the same ``minmax(A_k)`` bit for bit (one
    map a positive multiple of the other plus a constant, e.g. the same single hot cell) make
    the same masked copy up to rounding, so only the first is run and the others share its
    score (``assign`` points each channel to it, ``chosen`` marks the ones run). ``None`` when
    no image has such a pair (nothing to share). Measured on random-weight ResNets at 224:
    3 of 509 live ``layer4`` channels of ResNet-18, 34 of 1,954 of ResNet-50.
    """
    batch, k = activations.shape[:2]
    masks, _ = _grid_masks(activations)
    assign = torch.arange(k, device=activations.device).repeat(batch, 1)
    chosen = valid.clone()
    found = False
    for b in range(batch):
        members = valid[b].nonzero().squeeze(1)
        if members.numel() < 2:
            continue
        unique, inverse = torch.unique(masks[b, members], dim=0, return_inverse=True)
        if len(unique) == members.numel():
            continue
        found = True
        first = torch.full((len(unique),), members.numel(), device=members.device)
        first = first.scatter_reduce(0, inverse, torch.arange(members.numel(),
                                     device=members.device), "amin")  # fmt: skip
        assign[b, members] = members[first[inverse]]
        chosen[b] = False
        chosen[b, members[first]] = True
    return (assign, chosen) if found else None


GROUPING_ITERATIONS = 10
"""Lloyd iterations of ``budget``'s k-means over the channel masks (it usually settles sooner)."""


def group_channels(
    activations: Tensor, valid: Tensor, budget: int, iterations: int = GROUPING_ITERATIONS
) -> tuple[Tensor, Tensor]:
    """Group each image's channels by mask similarity: ``assign`` ``(B,K)`` long, ``chosen``
    ``(B,K)`` bool.

    The masks ``minmax(A_k)`` at the layer's grid ``(h*w,)`` of the valid channels of an image
    are clustered into ``budget`` groups by k-means (squared distance; started from the
    ``budget`` strongest channels by energy ``sum_ij A_k``, so the result is deterministic).
    Each group's representative is its member nearest the group's mean; ``assign[b, k]`` is
    the representative of channel ``k`` (itself for representatives and for constant channels)
    and ``chosen`` marks the representatives. An image with at most ``budget`` valid channels
    keeps every channel as its own representative (the exact computation).
    """
    batch, k = activations.shape[:2]
    masks, energy = _grid_masks(activations)
    assign = torch.arange(k, device=activations.device).repeat(batch, 1)
    chosen = valid.clone()
    for b in range(batch):
        members = valid[b].nonzero().squeeze(1)
        if members.numel() <= budget:
            continue
        points = masks[b, members]
        start = energy[b, members].argsort(descending=True, stable=True)[:budget]
        centres = points[start].clone()
        label = torch.cdist(points, centres).argmin(dim=1)
        for _ in range(iterations):
            sums = torch.zeros_like(centres).index_add_(0, label, points)
            counts = torch.bincount(label, minlength=budget)
            filled = counts > 0
            centres[filled] = sums[filled] / counts[filled, None]
            new = torch.cdist(points, centres).argmin(dim=1)
            if torch.equal(new, label):
                break
            label = new
        distance = torch.cdist(points, centres)
        own = distance.masked_fill(label[:, None] != torch.arange(budget, device=label.device),
                                   float("inf"))  # fmt: skip
        representative = members[own.argmin(dim=0)]  # (budget,): empty groups are never used
        assign[b, members] = representative[label]
        chosen[b] = False
        chosen[b, representative[label.unique()]] = True
    return assign, chosen


def channel_masks(
    activations: Tensor, images: Tensor, channels: Tensor, size: tuple[int, int]
) -> Tensor:
    """``H = minmax(U(A[images, channels]))``: ``(N,H,W)`` float32 masks in [0,1]."""
    return minmax(upsample(activations[images, channels], size))


def masked_inputs(x: Tensor, baseline: Tensor | None, masks: Tensor, index: Tensor) -> Tensor:
    """``x_b + H (x - x_b)`` for copies of images ``index`` ``(N,)``: ``(N,C,H,W)``."""
    picked = x[index]
    m = masks[:, None].to(picked.dtype)
    if baseline is None:
        return picked * m
    base = baseline[index]
    return base + m * (picked - base)


def channel_weights(
    scores: Tensor, done: Tensor, rule: str, baseline_scores: Tensor | None = None
) -> Tensor:
    """``beta`` ``(B,K)`` from the scores ``(B,K)`` of the channels marked ``done`` ``(B,K)``.

    ``"softmax"`` over the done channels of each image, ``"raw"`` the scores as they are,
    ``"relu-baseline"`` ``max(0, s_k - s_b)`` with ``baseline_scores`` ``(B,)``. Channels not
    done (not yet scored, or constant) weigh 0.
    """
    if rule == "softmax":
        beta = scores.masked_fill(~done, float("-inf")).softmax(dim=1)
    elif rule == "raw":
        beta = scores
    else:
        if baseline_scores is None:
            raise ValueError("weights='relu-baseline' needs the baseline scores")
        beta = torch.relu(scores - baseline_scores[:, None])
    return torch.where(done, beta, torch.zeros_like(beta))


class MaskedScorer:
    """Scores masked copies: ``scorer(images, channels)`` ``(N,)`` → ``(N,)`` float32 scores."""

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        baseline: Tensor | None,
        activations: Tensor,
        score: Callable[[object, Tensor], Tensor],
        autocast: torch.dtype | None,
        channels_last: bool,
    ) -> None:
        self.model = model
        self.x = x
        self.baseline = baseline
        self.activations = activations
        self.score = score
        self.autocast = autocast
        self.channels_last = channels_last
        self.size = (x.shape[-2], x.shape[-1])

    def __call__(self, images: Tensor, channels: Tensor) -> Tensor:
        masks = channel_masks(self.activations, images, channels, self.size)
        return self.forward(masked_inputs(self.x, self.baseline, masks, images), images)

    def forward(self, batch: Tensor, index: Tensor) -> Tensor:
        """Scores ``(N,)`` of the model on ``batch`` ``(N,C,H,W)``, copies of images ``index``."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        device = batch.device.type
        with torch.inference_mode():
            with torch.autocast(device, dtype=self.autocast, enabled=self.autocast is not None):
                output = self.model(batch)
            return at_least_fp32(self.score(output, index))


def scored_batches(
    scorer: MaskedScorer, images: Tensor, channels: Tensor, batch_size: int
) -> Iterator[tuple[slice, Tensor, int]]:
    """Run the work list in batches: yields ``(slice, scores (n,), batch size now)``.

    An out-of-memory error halves the batch size and retries the same copies; it is re-raised
    only when a single copy does not fit.
    """
    total = images.numel()
    start, size = 0, batch_size
    while start < total:
        stop = min(start + size, total)
        try:
            values = scorer(images[start:stop], channels[start:stop])
        except OUT_OF_MEMORY:
            if stop - start == 1:
                raise
            size = max(1, (stop - start) // 2)
            values = None
        if values is None:
            if images.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        yield slice(start, stop), values, size
        start = stop


def at_least_fp32(t: Tensor) -> Tensor:
    """``t`` upcast to float32 when it is in a lower precision (float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def clean_pass(
    model: nn.Module,
    x: Tensor,
    module: nn.Module,
    target: Target,
    output_key: OutputKey,
    autocast: torch.dtype | None,
    reader: Reader | None = None,
) -> tuple[Tensor, Bound, Tensor, Layout]:
    """One tapped forward pass: activations ``(B,K,h,w)`` fp32, bound target, scores ``(B,)``,
    and the layout the layer was read in (``reader``: channels-last and token layers too).

    The tap is removed before returning, so the masked re-forwards record nothing.
    """
    with Tap(module, reader) as tap, torch.no_grad():
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            output = model(x)
        if tap.output is None:
            raise ValueError("the explained layer did not run in the model's forward pass")
        activations = at_least_fp32(tap.maps().detach())
    bound = target.bind(output, output_key)
    scores = at_least_fp32(bound.scalar(output).detach())
    return activations, bound, scores, tap.layout


def _check_options(
    batch_size: int | None, channels_last: bool | None, on_progress: ProgressFn | None
) -> None:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be None (automatic) or an int >= 1, got {batch_size!r}")
    if channels_last is not None and not isinstance(channels_last, bool):
        raise TypeError(
            f"channels_last must be None (automatic), True or False, not {channels_last!r}"
        )
    if on_progress is not None and not callable(on_progress):
        raise TypeError(
            "on_progress must be a callable (done, total, partial_explanation) -> None, "
            f"not {type(on_progress).__name__}"
        )


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 / AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def auto_precision(model: nn.Module, images: Tensor) -> str:
    """What ``explain(..., precision="auto")`` means for Score-FAM/Score-CAM.

    ``"bf16"`` for a float32 model on a CPU with native bf16, where ``python -m famwidget.bench``
    measured masked forwards about 1.7x faster (bf16 autocast + channels_last vs fp32 +
    channels_last, paired runs, ResNet-18 at 224) and maps that correlate above 0.9999 with the
    fp32 maps; ``"fp32"`` everywhere else (CUDA is not measured yet; its fp32 convolutions use
    TF32 by default), and for models that are not float32.
    """
    params = [p for p in model.parameters() if p.is_floating_point()]
    float32 = images.dtype == torch.float32 and all(p.dtype == torch.float32 for p in params)
    return "bf16" if float32 and images.device.type == "cpu" and cpu_has_bf16() else "fp32"


def auto_channels_last(x: Tensor, autocast: torch.dtype | None) -> bool:
    """``channels_last=None``: on for CPUs with oneDNN (it prefers NHWC), for CUDA with autocast."""
    if x.device.type == "cpu":
        return torch.backends.mkldnn.is_available()
    return x.device.type == "cuda" and autocast is not None


def score_fam(
    model: nn.Module,
    images: Tensor,
    *,
    layer: str,
    module: nn.Module,
    target: Target,
    output_key: OutputKey = None,
    autocast: torch.dtype | None = None,
    masking: str | Tensor = "multiply",
    weights: str | None = None,
    score: str | None = None,
    convention: str | None = None,
    batch_size: int | None = None,
    channels_last: bool | None = None,
    on_progress: ProgressFn | None = None,
    layout: str | None = None,
    grid: tuple[int, int] | None = None,
    max_channels: int | None = None,
    budget: int | None = None,
    fold: bool | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    method: str = "score-fam",
) -> Explanation:
    """Score-FAM / Score-CAM map of ``images`` ``(B,C,H,W)`` → Explanation, heatmap ``(B,H,W)``.

    Options (``fw.explain(..., method="score-fam", <option>=...)``):

    - ``masking="multiply"``: how a copy is masked. ``"multiply"`` (``"zeros"``): ``x * H_k``, the
      formula of both seed papers; ``"mean"`` / ``"blur"`` / a tensor: blend toward a baseline
      image, ``x_b + H_k (x - x_b)``, with ``x_b`` each image's mean colour, the image blurred
      (sigma ``0.05 * min(H, W)``), or the tensor ``(C,H,W)``/``(B,C,H,W)`` given. [choice]:
      the default follows the papers and is provisional until the evaluation issue measures it.
    - ``score=None``: what is measured on a copy. ``"target"``: the target's score (Embedding:
      ``cos(f(x_k), f(x))``; class targets: the logit; Similarity: ``cos(f(x_k), ref)``; a
      callable: its value); ``"probability"``: the softmax probability of the target class
      (class targets only).
    - ``weights=None``: ``beta`` from the scores. ``"softmax"`` over channels; ``"raw"`` the
      scores; ``"relu-baseline"`` ``max(0, s_k - s_b)``, ``s_b`` the score of the baseline image
      (one more forward pass per image). [choice], decided by measurement: for feature-vector
      targets (Embedding, Similarity, Dimension, callables) the default is ``"relu-baseline"``:
      cosines lie in [-1, 1] and stay near 1 for most masked copies, so softmax weights are
      nearly uniform. ``famwidget evaluate --choices`` (reid_net, 64 held-out pedestrians,
      paired differences vs softmax): deletion AUC -0.099 +- 0.008, insertion +0.031 +- 0.005,
      pointing game +0.27 +- 0.06, mass on the identity parts +0.059 +- 0.004; "raw" is about
      as good. For class targets the default stays the library convention (softmax over
      channels), which Score-CAM users expect.
    - ``convention=None``: the two published Score-CAM conventions, as a shortcut for
      ``score``/``weights`` (explicit values win): ``"library"`` = target logit per masked input,
      then softmax over channels (what common Score-CAM libraries do; also what no convention
      means); ``"paper"`` = the original paper's softmax probability of the class per masked
      input, used as the weight (``score="probability", weights="raw"``).
    - ``batch_size=None``: masked copies per forward pass. ``None``: 8 copies of 224x224 on a
      CPU, scaled by image size (measured: ResNet-18 throughput is as high at 8 as at 16-64
      copies, and smaller batches stream partial maps more often); on CUDA what a quarter of
      the free memory holds by a generous estimate (64x the input size per copy), at most 256.
      An out-of-memory error halves it and the work goes on.
    - ``channels_last=None``: feed the copies in NHWC memory format (the model itself is never
      touched). ``None``: on for CPUs (oneDNN: about 1.2x faster for fp32 ResNet-18 in paired
      runs) and for CUDA under autocast (tensor cores prefer NHWC); off for CUDA fp32.
    - ``on_progress=None``: ``on_progress(done, total, partial)`` after each batch: copies done,
      copies in all, and the Explanation from the channels scored so far (the same formula
      restricted to them; the last one is the final map). An exception raised inside it stops
      the run and propagates (the widget cancels this way).
    - ``fold=None``: run the masked copies through a copy of the model with each BatchNorm
      folded into the convolution before it and the weights of convs and linears stored in the
      autocast dtype (:mod:`famwidget.explainers.inference_copy`; cached per model, rebuilt
      when a weight changes). It is used only where fx traces the model and the copy's output
      on the clean images agrees with the model's within 2% (L2); ``options["fold"]`` says
      whether it ran. ``None``: on for CPUs (1.08-1.2x faster masked forwards, ResNet-18 bf16
      at 224), off on CUDA (not measured there); ``False``: the model itself.
    - ``max_seconds=600``: refuse, before the clean pass, a run estimated to take longer
      (``famwidget.budget``: a timed forward of one downscaled image, scaled by pixels, times
      channels x images) or to need more memory than is available; ``None``: no limit.

    - ``layout=None``, ``grid=None``: how the layer's output is read (``"nchw"``, ``"nhwc"``,
      ``"tokens"``; see :mod:`famwidget.layout`). On a token or channels-last layer the masks
      are that layer's channel maps on its grid, upsampled and applied to the input image.

    - ``max_channels=None``: score only each image's ``max_channels`` strongest channels (by
      activation energy ``sum_ij A_k``, the order the work list runs in anyway); the others
      weigh 0. ``None``: every channel. A cheaper, approximate map for layers with many
      channels: exactly the partial map ``on_progress`` shows after that many ranks.

    A map that is constant or uninformative for a real reason is flagged in ``degenerate`` and
    warned about (see :func:`score_reasons`).

    ``autocast`` comes from ``explain(precision=...)``; activations, scores and maps are fp32
    (float64 stays float64) whatever it is. A channel is constant, skipped with weight 0 and no
    forward pass, when ``max - min <= 1e-5 * max|A_k|``. The Explanation's ``scores`` are the
    target's scalar on the clean images (``||f(x)||`` for Embedding, as in Grad-FAM), its
    ``weights`` the ``beta``, its ``options`` the resolved options plus ``batch_size`` (after
    any halving) and ``forwards`` (masked copies run).
    """
    if weights is None and convention is None and getattr(target, "kind", None) != "class":
        weights = "relu-baseline"  # measured best for feature vectors (see the docstring)
    rules = resolve_rules(masking, score, weights, convention)
    _check_options(batch_size, channels_last, on_progress)
    if fold is not None and not isinstance(fold, bool):
        raise TypeError(f"fold must be None (automatic), True or False, not {fold!r}")
    if max_channels is not None and (
        isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1
    ):
        raise ValueError(f"max_channels must be None (all) or an int >= 1, got {max_channels!r}")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
    ):
        raise ValueError(
            f"budget must be None (exact) or an int >= 1 (masked forwards per image), got "
            f"{budget!r}"
        )
    if budget is not None and max_channels is not None:
        raise ValueError(
            "give budget= (every channel weighs in, scored through a similar channel) or "
            "max_channels= (only the strongest channels weigh in), not both"
        )
    if rules.score == "probability" and getattr(target, "kind", None) != "class":
        raise ValueError(
            f"score='probability' (convention='paper') needs a class target such as Predicted() "
            f"or ClassLogit(c); the target is {target!r}"
        )
    use_cl = auto_channels_last(images, autocast) if channels_last is None else channels_last
    options: dict[str, Any] = {
        "masking": rules.masking,
        "score": rules.score,
        "weights": rules.weights,
        "convention": rules.convention,
        "channels_last": use_cl,
        "autocast": None if autocast is None else str(autocast),
        "budget": budget,
    }
    check_class_target(model, target, method)
    passes = len(images) if rules.weights == "relu-baseline" else 0
    check_budget(model, images, module, method=method, max_seconds=max_seconds, autocast=autocast,
                 baseline_passes=passes, channel_limit=budget or max_channels)  # fmt: skip
    baseline = baseline_images(images, masking)
    with preserved(model):
        reader = Reader(model, layer, module, images.shape[-2:], layout, grid, len(images))
        activations, bound, clean_scores, read = clean_pass(
            model, images, module, target, output_key, autocast, reader
        )
        options.update(grid=read.grid, prefix_tokens=read.prefix)
        last: dict[str, Tensor] = {}
        score_fn = bound.probability if rules.score == "probability" else bound.score
        runner = folded_runner(model, images, autocast, use_cl, fold)
        options["fold"] = runner is not model
        scorer = MaskedScorer(runner, images, baseline, activations, score_fn, autocast, use_cl)
        base_scores = None
        if rules.weights == "relu-baseline":
            base = torch.zeros_like(images) if baseline is None else baseline
            base_scores = scorer.forward(base, torch.arange(len(images), device=images.device))

        def build(scores: Tensor, done: Tensor, extra: dict[str, Any]) -> Explanation:
            beta = channel_weights(scores, done, rules.weights, base_scores)
            last.update(scores=scores, done=done, beta=beta)
            return Explanation(
                heatmap=cam(activations, beta, (images.shape[-2], images.shape[-1])),
                method=method,
                layer=layer,
                target=repr(target),
                activations=activations,
                weights=beta,
                scores=clean_scores,
                options={**options, **extra},
                layout=read.kind,
            )

        final = score_channels(scorer, batch_size, build, on_progress, max_channels, budget)
    reasons = score_reasons(activations, last["beta"], last["scores"], last["done"], rules.weights)
    return flag_degenerate(final, reasons)


def folded_runner(
    model: nn.Module,
    images: Tensor,
    autocast: torch.dtype | None,
    channels_last: bool,
    fold: bool | None,
) -> nn.Module:
    """What runs the masked copies: the folded copy of ``model`` when ``fold`` (``None``: on a
    CPU) and it can be built and agrees with the model on ``images`` ``(B,C,H,W)``; else the
    model itself."""
    if fold is False or (fold is None and images.device.type != "cpu"):
        return model
    folded = inference_copy(model, autocast)
    if folded is None:
        return model
    folded = folded.to(images.device)
    x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
    cast = torch.autocast(images.device.type, dtype=autocast, enabled=autocast is not None)
    with torch.inference_mode(), cast:
        same = agrees(folded(x), model(x))
    return folded if same else model


def score_reasons(
    activations: Tensor, beta: Tensor, scores: Tensor, done: Tensor, rule: str
) -> list[str | None]:
    """Why each image's map is constant or carries no information about the target, or None.

    ``activations`` ``(B,K,h,w)``, ``beta``/``scores``/``done`` ``(B,K)``. Besides
    :func:`famwidget.maps.cam_reasons`: every masked copy scored the same (relative spread
    ``<= 1e-5``: the target does not respond to masking); ``"relu-baseline"`` with no copy above
    the baseline; ``"softmax"`` over scores that differ by less than ``SOFTMAX_SPREAD`` (equal
    weights: the map would be the plain channel sum, e.g. a classifier whose logits are tiny).
    """
    reasons = cam_reasons(activations, beta)
    for b, reason in enumerate(reasons):
        if reason is not None and "dead layer" in reason:
            continue
        s = scores[b][done[b]].float()
        if s.numel() < 2:
            continue
        spread, scale = float(s.max() - s.min()), float(s.abs().max())
        if spread <= RELATIVE_EPS * scale:
            reasons[b] = (
                f"every masked copy scored the same ({float(s[0]):.6g}): the target does not "
                "respond to masking this layer's channels"
            )
        elif rule == "relu-baseline" and not bool((beta[b] > 0).any()):
            reasons[b] = (
                "no masked copy scored above the baseline image, so every channel weight is 0"
            )
        elif rule == "softmax" and spread < SOFTMAX_SPREAD:
            reasons[b] = (
                f"the masked scores differ by only {spread:.3g}, so the softmax weighs every "
                "channel the same and the map is the plain channel sum; weights='raw' or "
                "'relu-baseline' do not depend on the scale of the scores"
            )
    return reasons


def score_channels(
    scorer: MaskedScorer,
    batch_size: int | None,
    build: Callable[[Tensor, Tensor, dict[str, Any]], Explanation],
    on_progress: ProgressFn | None,
    max_channels: int | None = None,
    budget: int | None = None,
) -> Explanation:
    """Score every non-constant channel in batches; ``build(scores, done, extra)`` makes maps.

    ``max_channels``: only each image's strongest ``max_channels`` channels (by energy).
    ``budget``: only each image's ``budget`` group representatives (:func:`group_channels`);
    every channel then gets its representative's score. Without either, channels with
    identical masks (:func:`duplicate_channels`) are run once and share the score.

    ``scores`` and ``done`` are ``(B,K)`` (float32 scores, which channels are scored so far);
    ``on_progress`` gets a partial Explanation after each batch, the final one is returned.
    """
    activations = scorer.activations
    images, channels, valid = work_list(activations, max_channels)
    shared = None
    if budget is not None:
        shared = group_channels(activations, valid, budget)
    elif max_channels is None:
        shared = duplicate_channels(activations, valid)
    assign = None
    if shared is not None:
        assign, chosen = shared
        images, channels, valid = work_list(activations, max_channels, among=chosen)
    total = images.numel()
    first = auto_batch_size(scorer.x, total) if batch_size is None else batch_size
    size = first
    scores = activations.new_zeros(activations.shape[:2])
    done = torch.zeros_like(scores, dtype=torch.bool)

    def make(extra: dict[str, Any]) -> Explanation:
        if assign is None:
            return build(scores, done, extra)
        return build(scores.gather(1, assign), done.gather(1, assign) & valid, extra)

    with torch.no_grad():
        for part, values, size in scored_batches(scorer, images, channels, first):
            where = (images[part], channels[part])
            scores.index_put_(where, values.to(scores.dtype))
            done.index_put_(where, torch.ones_like(values, dtype=torch.bool))
            if on_progress is not None:
                on_progress(part.stop, total, make(_extra(size, total)))
        final = make(_extra(size, total))
    if on_progress is not None and total == 0:
        on_progress(0, 0, final)
    return final


def _extra(batch_size: int, forwards: int) -> dict[str, Any]:
    return {"batch_size": batch_size, "forwards": forwards}


score_cam = partial(score_fam, method="score-cam")
"""Score-CAM: :func:`score_fam` with a class target (default ``Predicted()``)."""

METHODS = [
    Method(
        "score-fam",
        score_fam,
        Embedding,
        summary="cosine of masked copies' features",
        auto_precision=auto_precision,
    ),
    Method(
        "score-cam",
        score_cam,
        Predicted,
        summary="class score of masked copies",
        auto_precision=auto_precision,
    ),
]
