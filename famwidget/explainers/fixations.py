"""CNN Fixations (seed 002): explain an output by walking the recorded forward pass backwards.

No gradients. The model is traced with ``torch.fx`` and run once; the inputs of every layer on
the way are kept. From the explained output neurons, the per-layer rules of
:mod:`famwidget.explainers.fixation_rules` move a deduplicated set of "fixations" (an index
``j`` in a vector, ``(c, y, x)`` in a feature map) back to the image, where they land on pixels.
The heatmap is the density of those pixels: outliers dropped, counts blurred, ``minmax``.

Start set:

- class targets (``Predicted()``, ``ClassLogit(c)``): the class neuron;
- ``Embedding()``: the smallest set of dimensions that carries at least ``energy`` (default
  half) of ``||f||²``, each with the sign of ``f_d``;
- ``Similarity(ref)``: the same with the positive terms ``f_d * ref_d`` of the dot product;
- ``Dimension(d)``: that dimension.

A feature-map output ``(B,C,h,w)`` is explained through its global average pool (as
:func:`famwidget.targets.feature_vector` does): each start channel first moves to its argmax.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, fx, nn

from ..explanation import Explanation, flag_degenerate
from ..maps import gaussian_kernel, minmax
from ..method import Method
from ..tap import preserved
from ..targets import (
    ClassLogit,
    Dimension,
    Embedding,
    OutputKey,
    Predicted,
    Similarity,
    Target,
    feature_vector,
)
from . import fixation_rules as rules
from . import fixation_walk as engine
from .fixation_walk import Points, Rule, Walk, first_source, sign_of, unravel
from .graph import op_kind, record_forward, signal_nodes, trace

LOCS = ("center", "argmax")


def fixations(
    model: nn.Module,
    images: Tensor,
    *,
    target: Target | None = None,
    output_key: OutputKey = None,
    autocast: torch.dtype | None = None,
    loc: str = "argmax",
    radius: float = 0.1,
    share: float = 0.05,
    sigma: float = 0.09,
    energy: float = 0.5,
) -> Explanation:
    """CNN Fixations of ``images`` ``(B,C,H,W)``: heatmap ``(B,H,W)`` and the fixations per image.

    Args:
        model: any ``nn.Module`` that ``torch.fx.symbolic_trace`` can trace (VGG, ResNet,
            DenseNet, MobileNetV2, Sequential CNNs, ...); restored afterwards.
        images: preprocessed float batch on the model's device.
        target: ``None`` picks ``Predicted()`` when the output comes straight from an
            ``nn.Linear`` (a classification head) and ``Embedding()`` otherwise (a feature map,
            a pooled vector, a normalised or BatchNorm embedding). Pass
            ``fw.targets.Embedding()`` for an embedding model whose last layer is a Linear
            projection, or ``fw.targets.Predicted()`` / ``ClassLogit(c)`` to force a class.
            Also accepted: ``Similarity(ref)``, ``Dimension(d)``; not callables.
        output_key: which element of a tuple/dict output is explained (default the first).
        autocast: bf16/fp16 autocast dtype for the forward pass (rules compute in fp32).
        loc: position rule of convolutions: "argmax" (move to the largest contribution
            inside the window) or "center" (stay at the window centre: the rule of the
            paper's code). "argmax" is the default by measurement
            (:func:`famwidget.bench.fixations.loc_study`, 200 held-out images per zoo
            model): the share of fixations inside the discriminative parts rose from
            0.36 / 0.67 / 0.28 / 0.40 to 0.88 / 0.92 / 0.51 / 0.59 (flower_net single /
            double, ssl_net, reid_net), the pointing game from 0.55 / 0.95 / 0.41 / 0.55 to
            0.90 / 0.99 / 0.59 / 0.67, the heatmap mass inside the parts stayed equal or rose.
        radius: outlier radius as a share of the image diagonal (0.1, the paper's value).
        share: a fixation is kept when more than this share of the image's distinct fixation
            pixels lie within ``radius`` of it (itself included; 0.05 = 5%).
        sigma: Gaussian blur as a share of ``min(H, W)`` (0.09: 20 px at 224); 0 = no blur.
        energy: share of ``||f||²`` carried by the start dimensions of an embedding.

    Returns:
        Explanation with ``heatmap`` (B,H,W) float32 in [0,1], ``points`` a list of B int64
        tensors ``(N_i, 2)`` of distinct ``(y, x)`` pixels (after outlier removal), ``scores``
        the target on each image, and the options in ``options``.
    """
    _check_options(loc, radius, share, sigma, energy)
    arrived, chosen, scores = backtrack(
        model, images, target=target, output_key=output_key, autocast=autocast, loc=loc,
        energy=energy,
    )  # fmt: skip
    with torch.inference_mode():
        size = tuple(images.shape[-2:])
        points, counts = pixels(arrived, images.shape[0], size, radius, share)
        heatmap = minmax(blur(counts, sigma * min(size)))
    explanation = Explanation(
        heatmap=heatmap,
        method="fixations",
        layer="",
        target=repr(chosen),
        points=points,
        scores=scores,
        options=dict(
            loc=loc,
            radius=radius,
            share=share,
            sigma=sigma,
            energy=energy,
            autocast=None if autocast is None else str(autocast),
        ),
    )
    reasons = [_why_empty(p, h) for p, h in zip(points, heatmap, strict=True)]
    return flag_degenerate(explanation, reasons)


def _why_empty(points: Tensor, heatmap: Tensor) -> str | None:
    """Why an image's fixation map is blank (None when it is not)."""
    if len(points) == 0:
        return (
            "no fixation reaches the image: the explained neurons have no input with a "
            "positive contribution (a zero or dead classifier, an all-zero feature vector?)"
        )
    if float(heatmap.max()) <= float(heatmap.min()):
        return "the fixations' density is uniform over the image"
    return None


def backtrack(
    model: nn.Module,
    images: Tensor,
    *,
    target: Target | None = None,
    output_key: OutputKey = None,
    autocast: torch.dtype | None = None,
    loc: str = "argmax",
    energy: float = 0.5,
) -> tuple[Tensor, Target, Tensor]:
    """The raw fixations on the images, before outlier removal.

    Returns ``(points, target, scores)``: ``points`` ``(N,5)`` int64 rows ``(b, c, y, x, s)``
    (image, input channel, pixel, sign), distinct; the target used (``target`` or the
    default); the target's value on each image ``(B,)``. Options as in :func:`fixations`.
    """
    if loc not in LOCS:
        raise ValueError(f"loc must be one of {LOCS}, got {loc!r}")
    with preserved(model):
        traced = trace(model, "CNN Fixations")
        out_node = pick(_output_structure(traced), output_key, "the traced output")
        active = signal_nodes(traced)
        plan = plan_walk(traced, out_node, active)
        with torch.inference_mode():
            walk, output = record(traced, images, plan, active, autocast)
            walk.loc = loc
            chosen = target if target is not None else default_target(traced, out_node, walk)
            value = pick(output, output_key, "the model output")
            start = start_points(chosen, output, value, output_key, energy)
            arrived = engine.walk_back(walk, plan, out_node, start, value)
            scores = chosen.bind(output, output_key).scalar(output).float()
    return arrived, chosen, scores


def check_supported(
    model: nn.Module, example_images: Tensor, *, output_key: OutputKey = None
) -> str | None:
    """Whether CNN Fixations can explain ``model``: ``None`` when every op on the way back from
    the output to the images has a rule (checked by running it on the first example image),
    else the reason, naming the op and its module. The model comes back as it went in."""
    try:
        backtrack(model, example_images[:1], output_key=output_key)
    except (ValueError, TypeError, NotImplementedError, RuntimeError, IndexError) as error:
        return str(error)
    return None


def _check_options(loc: str, radius: float, share: float, sigma: float, energy: float) -> None:
    if loc not in LOCS:
        raise ValueError(f"loc must be one of {LOCS}, got {loc!r}")
    if not radius > 0:
        raise ValueError(f"radius (share of the image diagonal) must be > 0, got {radius}")
    if not 0 <= share < 1:
        raise ValueError(f"share (of the fixations near a kept one) must be in [0, 1), got {share}")
    if not sigma >= 0:
        raise ValueError(f"sigma (share of min(H, W)) must be >= 0, got {sigma}")
    if not 0 < energy <= 1:
        raise ValueError(f"energy (share of ||f||² to explain) must be in (0, 1], got {energy}")


# ----------------------------------------------------------------------------- tracing


def _output_structure(traced: fx.GraphModule) -> Any:
    out = next(n for n in reversed(traced.graph.nodes) if n.op == "output")
    return out.args[0]


def pick(structure: Any, key: OutputKey, what: str) -> Any:
    """The element of a model output (tensor, tuple/list, dict) that ``output_key`` names.

    Same convention as :func:`famwidget.targets.feature_vector`: default the first element of
    a tuple, the only entry of a dict.
    """
    if isinstance(structure, dict):
        if key is None and len(structure) == 1:
            key = next(iter(structure))
        elif key is None:
            raise ValueError(
                f"the model returns a dict with keys {list(structure)}; pass output_key= to say "
                "which one is explained"
            )
        if key not in structure:
            raise ValueError(
                f"output_key {key!r} does not name an entry of {what}: {list(structure)}"
            )
        return structure[key]
    if isinstance(structure, (tuple, list)):
        index = 0 if key is None else key
        if not isinstance(index, int) or not -len(structure) <= index < len(structure):
            raise ValueError(f"output_key {key!r} does not index the {len(structure)} outputs")
        return structure[index]
    return structure


def plan_walk(traced: fx.GraphModule, out_node: Any, active: set[fx.Node]) -> dict[fx.Node, Rule]:
    """The rule of every node that fixations can reach from ``out_node``; fails on the first op
    on the way that has none (before anything runs)."""
    return engine.plan_walk(traced, out_node, active, rules.rule_for, rules.SUPPORTED)


# ----------------------------------------------------------------------------- recording


def record(
    traced: fx.GraphModule,
    images: Tensor,
    plan: dict[fx.Node, Rule],
    active: set[fx.Node],
    autocast: torch.dtype | None,
) -> tuple[Walk, Any]:
    """One forward pass of ``images``: the :class:`Walk` the rules read, and the model output."""
    keep = {r for n, rule in plan.items() for r in rule.recorded(n)}
    with torch.autocast(images.device.type, dtype=autocast, enabled=autocast is not None):
        recording = record_forward(traced, images, keep)
    walk = Walk(traced, recording.records, recording.shapes, active)
    return walk, recording.output


# ----------------------------------------------------------------------------- start and walk


def default_target(traced: fx.GraphModule, out_node: fx.Node, walk: Walk) -> Target:
    """``Predicted()`` if the output is a vector made by an ``nn.Linear`` (through dropout,
    identity, casts), else ``Embedding()``."""
    node = out_node
    while True:
        kind = op_kind(traced, node)
        if kind == "linear" and rules.rule_for(traced, node) is rules.LINEAR:
            return Predicted() if len(walk.shapes[out_node]) == 2 else Embedding()
        sources = first_source(node, walk.active)
        if kind != "identity" or not sources:
            return Embedding()
        node = sources[0]


def start_points(
    target: Target, output: Any, value: Tensor, key: OutputKey, energy: float
) -> Points:
    """The explained neurons as fixations on the raw output ``value`` (see the module docstring)."""
    f = feature_vector(output, key).float()
    bound = target.bind(output, key)
    batch = f.shape[0]
    rows = torch.arange(batch, device=f.device)
    if isinstance(target, (Predicted, ClassLogit)) or target.kind == "class":
        classes = getattr(bound, "classes", None)
        if classes is None:
            raise TypeError(f"CNN Fixations cannot find the class neuron of target {target!r}")
        start = torch.stack([rows, classes.to(f.device), torch.ones_like(rows)], dim=1)
    elif isinstance(target, Dimension):
        d = torch.full_like(rows, bound.d % f.shape[1])
        start = torch.stack([rows, d, sign_of(f[rows, d])], dim=1)
    elif isinstance(target, (Embedding, Similarity)):
        weights = f**2 if isinstance(target, Embedding) else (f * bound.reference.float()).relu()
        b, d = smallest_share(weights, energy).nonzero(as_tuple=True)
        start = torch.stack([b, d, sign_of(f[b, d])], dim=1)
    else:
        raise TypeError(
            f"CNN Fixations starts from neurons: use Predicted(), ClassLogit(c), Embedding(), "
            f"Similarity(ref) or Dimension(d); {target!r} cannot be traced back"
        )
    return on_output(start, value)


def smallest_share(weights: Tensor, energy: float) -> Tensor:
    """Per row of ``weights`` ``(B,D)`` (>= 0), the smallest set of entries holding at least
    ``energy`` of the row's sum: a boolean ``(B,D)`` mask (empty for an all-zero row)."""
    ordered, order = weights.sort(dim=1, descending=True)
    before = ordered.cumsum(dim=1) - ordered
    chosen = (before < energy * weights.sum(dim=1, keepdim=True)) & (ordered > 0)
    return torch.zeros_like(chosen).scatter(1, order, chosen)


def on_output(start: Points, value: Tensor) -> Points:
    """Move start fixations ``(N,3)`` on the feature vector to indices into the raw output."""
    if value.dim() == 2:
        return start
    if value.dim() == 4:  # the feature vector is the global average pool
        return rules.reduce_points(value, (2, 3), start[:, :2], start[:, 2])
    if value.dim() == 1:
        return start[:, [0, 2]]
    coords = unravel(start[:, 1], value.shape[1:])
    return torch.cat([start[:, :1], coords, start[:, 2:]], dim=1)


# ----------------------------------------------------------------------------- pixels and map


def pixels(
    arrived: Points, batch: int, size: tuple[int, int], radius: float, share: float
) -> tuple[list[Tensor], Tensor]:
    """Fixations ``(N,5)`` on the images → per image distinct ``(y, x)`` inliers ``(N_i,2)`` and
    counts ``(B,H,W)``: at each kept pixel, the number of its fixations (one per colour channel)."""
    height, width = size
    reach = radius * math.hypot(height, width)
    arrived = torch.unique(arrived[:, :4], dim=0)  # a pixel-channel reached with both signs: once
    counts = torch.zeros(batch, height * width, device=arrived.device)
    flat = arrived[:, 2] * width + arrived[:, 3]
    counts.index_put_((arrived[:, 0], flat), torch.ones_like(flat, dtype=counts.dtype), True)
    points = []
    for b in range(batch):
        where = counts[b].nonzero()[:, 0]
        yx = torch.stack([where // width, where % width], dim=1)
        keep = inliers(yx, reach, share)
        points.append(yx[keep])
        dropped = where[~keep]
        counts[b, dropped] = 0
    return points, counts.view(batch, height, width)


def inliers(yx: Tensor, reach: float, share: float) -> Tensor:
    """Mask ``(N,)``: points with more than ``share * N`` points (themselves included) closer
    than ``reach`` pixels."""
    n = yx.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=yx.device)
    p = yx.float()
    near = torch.cat([(torch.cdist(p[part], p) < reach).sum(dim=1) for part in _rows(n)])
    return near > share * n


def _rows(n: int, block: int = 2048) -> list[slice]:
    return [slice(i, min(n, i + block)) for i in range(0, n, block)]


def blur(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of ``(B,H,W)`` with standard deviation ``sigma`` pixels, zero outside.

    Separable, as two products with banded ``(H,H)`` and ``(W,W)`` Gaussian matrices (the
    same sums as a zero-padded convolution truncated at 3 sigma, and much faster on a CPU).
    """
    if sigma <= 0:
        return maps
    height, width = maps.shape[-2:]
    return (
        gaussian_matrix(height, sigma, maps.device)
        @ maps.float()
        @ gaussian_matrix(width, sigma, maps.device)
    )


def gaussian_matrix(n: int, sigma: float, device: torch.device) -> Tensor:
    """``(n,n)`` symmetric: entry ``(i, j)`` is the normalised Gaussian weight of ``|i - j|``
    (zero beyond ``ceil(3 sigma)``)."""
    kernel = gaussian_kernel(sigma, device)
    radius = kernel.numel() // 2
    offset = torch.arange(n, device=device)[:, None] - torch.arange(n, device=device)[None, :]
    inside = offset.abs() <= radius
    return torch.where(inside, kernel[(offset + radius).clamp(0, 2 * radius)], 0.0)


METHODS = [
    Method(
        "fixations",
        fixations,
        None,
        needs_layer=False,
        summary="gradient-free backtracking of the forward pass (CNN Fixations)",
    )
]
