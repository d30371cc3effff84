"""The per-operation rules of CNN Fixations: how fixations move from an op's output to its inputs.

A set of fixations at a graph node is an int64 tensor ``(N, r+1)`` for a node whose value has
``r`` dims: the full index ``(b, i_1, ..., i_{r-1})`` into the node's output (``(b, c, y, x)``
for a feature map, ``(b, j)`` for a vector) and a last column ``s`` in {-1, +1}, the sign of the
value being explained ("why is this value large" for +1, "why is it so negative" for -1; +1
everywhere in ReLU networks). A rule turns the fixations of one node into fixations of the
nodes that fed it, all points of a node at once, with tensor ops (gathers, argmax), never a
Python loop over points.

Rules (seed 002, docs/methods.md):

===============================  ==========================================================
op                               rule
===============================  ==========================================================
Linear on a vector (per token,   every input ``j`` with ``s * a_j * W[i, j] > 0``
per pixel of a channels-last
map)
Linear fed by a flattened map    only the largest ``s * a_j * W[i, j]`` (then unflattened)
Conv2d (any stride, padding,     channel: argmax over the input channels of its group of
dilation, groups)                ``s * sum_window(window * W[c])``; position: ``loc``
                                 ("center": the window centre; "argmax": the largest
                                 contribution inside the window, padding excluded)
MaxPool2d, AdaptiveMaxPool2d     the switch (argmax in the window, padding = -inf)
AvgPool2d, AdaptiveAvgPool2d,    the argmax of ``s * input`` inside the pooling window
mean / sum over dims             (the whole map for a global pool)
add / sub                        the summand with the larger ``s * value`` at the point
cat                              the input that holds the channel (offset subtracted)
dropout, identity, casts         pass through
flatten / view / reshape         re-index through the row-major order
a function fx keeps whole        traced on its recorded arguments and walked inside
(Swin's shifted_window_attention)
===============================  ==========================================================

Gates, norms, smooth activations, scales, every other reshape/permute/split/getitem/pad,
resize and attention: :mod:`famwidget.explainers.fixation_rules_modern`. Each rule is chosen
from the node's kind (:func:`famwidget.explainers.graph.op_kind`) in :func:`rule_for`.
The inputs of every rule are the values the op saw in the recorded forward pass.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from . import fixation_rules_modern as modern
from .fixation_walk import (
    CHUNK_ELEMENTS,
    Points,
    Routed,
    Rule,
    Walk,
    _cat_inputs,
    _operands,
    _pair,
    cat_sources,
    chunks,
    first_source,
    operand_sources,
    ravel,
    sign_of,
    unravel,
    with_sign,
)
from .graph import describe, op_kind, record_forward, signal_nodes, trace_function

# ----------------------------------------------------------------------------- index-only rules


def pass_through(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Elementwise ops: same index on the input (shapes must match: no broadcasting)."""
    (src,) = first_source(node, walk.active) or [None]
    if src is None:
        return []
    if walk.shapes[src] != walk.shapes[node]:
        raise ValueError(
            f"CNN Fixations: {describe(walk.module, node)} changes the shape "
            f"{tuple(walk.shapes[src])} -> {tuple(walk.shapes[node])}; no rule for that"
        )
    return [(src, points)]


def view(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """flatten / view / reshape / squeeze: re-index through the row-major order of the whole
    tensor (also when it regroups the batch, as a window partition does)."""
    (src,) = first_source(node, walk.active) or [None]
    if src is None:
        return []
    before, after = walk.shapes[src], walk.shapes[node]
    coords = unravel(ravel(points[:, :-1], after), before)
    return [(src, with_sign(coords, points[:, -1]))]


def cat(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Concatenation: each point goes to the input holding its index along ``dim``."""
    inputs = _cat_inputs(node)
    rank = len(walk.shapes[node])
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    dim = dim % rank
    if dim == 0:
        raise ValueError(f"CNN Fixations: {describe(walk.module, node)} concatenates images")
    sizes = [int(walk.shapes[a][dim]) if isinstance(a, fx.Node) else a.shape[dim] for a in inputs]
    ends = torch.tensor(sizes, device=points.device).cumsum(0)
    piece = torch.bucketize(points[:, dim].contiguous(), ends, right=True)
    routed: Routed = []
    for k, src in enumerate(inputs):
        if not (isinstance(src, fx.Node) and src in walk.active):
            continue
        mine = points[piece == k]
        if mine.shape[0]:
            mine = mine.clone()
            mine[:, dim] -= int(ends[k]) - sizes[k]
            routed.append((src, mine))
    return routed


# ----------------------------------------------------------------------------- value rules


def add(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """``a + b`` (``a - b``): follow the summand with the larger ``s * value`` at each point."""
    operands = _operands(node)
    args, kwargs = walk.records[node]
    values = [args[i] if i < len(args) else kwargs.get("other") for i in range(2)]
    factors = [1.0, -1.0 if node.target in SUBTRACTIONS else 1.0]
    factors[1] *= float(kwargs.get("alpha", 1.0))
    s = points[:, -1].float()
    candidates = []
    for operand, value, factor in zip(operands, values, factors, strict=True):
        if isinstance(operand, fx.Node) and operand in walk.active:
            coords = broadcast_index(walk, node, operand, points)
            contribution = value[tuple(coords.T)].float() * factor * s
            candidates.append((operand, coords, contribution, value))
    if not candidates:
        return []
    if len(candidates) == 1:
        operand, coords, _, value = candidates[0]
        return [(operand, with_sign(coords, sign_of(value[tuple(coords.T)])))]
    first = candidates[0][2] >= candidates[1][2]
    routed: Routed = []
    for (operand, coords, _, value), pick in zip(candidates, (first, ~first), strict=True):
        chosen = coords[pick]
        if chosen.shape[0]:
            routed.append((operand, with_sign(chosen, sign_of(value[tuple(chosen.T)]))))
    return routed


def broadcast_index(walk: Walk, node: fx.Node, operand: fx.Node, points: Points) -> Tensor:
    """The index ``(N, r_operand)`` into ``operand`` that the output index ``points`` reads."""
    out_shape, shape = walk.shapes[node], walk.shapes[operand]
    lead = len(out_shape) - len(shape)
    if lead != 0 or shape[0] != out_shape[0]:
        raise ValueError(
            f"CNN Fixations: {describe(walk.module, node)} broadcasts {tuple(shape)} over the "
            f"batch of {tuple(out_shape)}; only per-image operands are supported"
        )
    coords = points[:, :-1].clone()
    for d, size in enumerate(shape):
        if size == 1:
            coords[:, d] = 0
    return coords


def linear(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Linear: all positive contributors on a vector, the single largest one on a flattened map."""
    src = first_source(node, walk.active)[0]
    x = walk.arg(node, 0, "input")
    if node.op == "call_module":
        weight = walk.module.get_submodule(node.target).weight
    else:
        weight = walk.arg(node, 1, "weight")
    rows = x.reshape(-1, x.shape[-1])  # (R, in): one input vector per row
    row = ravel(points[:, :-2], x.shape[:-1])
    out_i, sign = points[:, -2], points[:, -1]
    if fed_by_map(walk, node):
        kept_row, j = row, largest_contributors(rows, weight, row, out_i, sign)
    else:
        kept_row, j = positive_contributors(rows, weight, row, out_i, sign)
    coords = torch.cat([unravel(kept_row, x.shape[:-1]), j[:, None]], dim=1)
    return [(src, with_sign(coords, sign_of(rows[kept_row, j])))]


def positive_contributors(
    rows: Tensor, weight: Tensor, row: Tensor, out_i: Tensor, sign: Tensor
) -> tuple[Tensor, Tensor]:
    """Every ``(r, j)`` with ``s * rows[r, j] * W[i, j] > 0`` for some point ``(r, i, s)``.

    A point wants ``x_j > 0`` where ``s * W[i, j] > 0`` and ``x_j < 0`` where it is < 0, so
    per row the wishes are products of point indicators ``(R', out)`` (only the rows that hold
    points) with the sign patterns of ``W`` ``(out, in)``. Both patterns travel in one matrix,
    ``[W > 0] + K [W < 0]`` with ``K = out + 1`` (exact in float32 while ``out (out + 2) <
    2^24``), so points of one sign cost one product: one forward pass of the layer at most.
    """
    used, at = torch.unique(row, return_inverse=True)
    n_out = weight.shape[0]
    k = n_out + 1
    packed = n_out * (n_out + 2) < (1 << 24)
    up, down = (weight > 0).float(), (weight < 0).float()
    code = up + k * down if packed else None
    wants_up = torch.zeros(len(used), weight.shape[1], device=rows.device)
    wants_down = torch.zeros_like(wants_up)
    for s in (1, -1):
        mine = sign == s
        if not bool(mine.any()):
            continue
        chosen = torch.zeros(len(used), n_out, device=rows.device)
        chosen[at[mine], out_i[mine]] = 1.0
        if packed:
            both = chosen @ code
            n_down = torch.div(both, k, rounding_mode="floor")
            n_up = both - k * n_down
        else:
            n_up, n_down = chosen @ up, chosen @ down
        wants_up += n_up if s > 0 else n_down
        wants_down += n_down if s > 0 else n_up
    x = rows[used]
    keep = ((x > 0) & (wants_up > 0)) | ((x < 0) & (wants_down > 0))
    r, j = keep.nonzero(as_tuple=True)
    return used[r], j


def largest_contributors(
    rows: Tensor, weight: Tensor, row: Tensor, out_i: Tensor, sign: Tensor
) -> Tensor:
    """Per point ``(r, i, s)``: ``argmax_j s * rows[r, j] * W[i, j]`` ``(N,)``.

    With few rows (one per image, the usual case) the points are taken row by row; a row
    whose points reach most output neurons sweeps the whole of ``W`` once instead of copying
    the rows the points select.
    """
    found = torch.empty_like(out_i)
    if rows.shape[0] > 64:
        for part in chunks(len(row), 2 * rows.shape[1]):
            product = weight.index_select(0, out_i[part]).float()
            product.mul_(rows.index_select(0, row[part]))
            found[part] = _signed_argmax(product, sign[part])
        return found
    for r in range(rows.shape[0]):
        at = (row == r).nonzero()[:, 0]
        if 2 * len(at) > weight.shape[0]:
            best = _sweep(weight, rows[r], bool((sign[at] < 0).any()))
            found[at] = torch.where(sign[at] > 0, best[0][out_i[at]], best[1][out_i[at]])
            continue
        for part in chunks(len(at), 2 * rows.shape[1]):
            product = weight.index_select(0, out_i[at[part]]).float().mul_(rows[r])
            found[at[part]] = _signed_argmax(product, sign[at[part]])
    return found


def _signed_argmax(product: Tensor, sign: Tensor) -> Tensor:
    """``argmax_j sign * product`` per row of ``product`` ``(n, in)`` (modified in place)."""
    negative = sign < 0
    if bool(negative.any()):
        product[negative] *= -1
    return product.argmax(dim=1)


def _sweep(weight: Tensor, x: Tensor, with_min: bool) -> tuple[Tensor, Tensor]:
    """``argmax_j`` (and ``argmin_j`` if asked) of ``W[i, j] * x[j]`` for every output ``i``."""
    best, worst = [], []
    step = max(1, CHUNK_ELEMENTS // weight.shape[1])
    for start in range(0, weight.shape[0], step):
        product = weight[start : start + step].float() * x
        best.append(product.argmax(dim=1))
        worst.append(product.argmin(dim=1) if with_min else best[-1])
    return torch.cat(best), torch.cat(worst)


def fed_by_map(walk: Walk, node: fx.Node) -> bool:
    """Whether a Linear reads a flattened spatial map: ``(B,C,h,w)`` with ``h*w > 1`` made into
    the vector ``(B, C*h*w)`` it multiplies (through activations, norms, dropout)."""
    current = node
    while True:
        sources = first_source(current, walk.active)
        if not sources:
            return False
        current = sources[0]
        kind = op_kind(walk.module, current)
        if kind == "reshape":
            before = walk.shapes.get(first_source(current, walk.active)[0])
            after = walk.shapes.get(current)
            if before is None or after is None or len(before) < 3 or len(after) != 2:
                return False
            return after[1] == math.prod(before[1:]) and math.prod(before[2:]) > 1
        if kind not in ("identity", "activation", "norm"):
            return False


def conv2d(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Conv2d: the channel (within the group) with the largest contribution; position by ``loc``."""
    src = first_source(node, walk.active)[0]
    p = conv_params(walk, node)
    x, weight = p["x"], p["weight"]
    c_out, c_in, kh, kw = weight.shape
    b, c = points[:, 0], points[:, 1]
    group_start = (c // (c_out // p["groups"])) * c_in
    moved = []
    for part in chunks(points.shape[0], 3 * kh * kw * c_in):
        if kh == kw == 1 and not any(p["padding"]):
            moved.append(_pointwise(p, points[part], group_start[part]))
        else:
            moved.append(_windowed(p, points[part], group_start[part], walk.loc))
    k, y, xx = (torch.cat(parts) for parts in zip(*moved, strict=True))
    coords = torch.stack([b, group_start + k, y, xx], dim=1)
    return [(src, with_sign(coords, sign_of(x[tuple(coords.T)])))]


def _pointwise(
    p: dict[str, Any], points: Points, group_start: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """1x1 conv without padding: the window is one pixel, so both ``loc`` rules agree.

    Returns the channel within the group ``(n,)`` and the input position ``(n,), (n,)``.
    """
    x, weight = p["x"], p["weight"]
    (sh, sw), c_in = p["stride"], weight.shape[1]
    b, c, y, xx, s = points.unbind(1)
    y, xx = y * sh, xx * sw
    column = gather_windows(x, b, y[:, None], xx[:, None], group_start, c_in)[:, 0, 0]
    contribution = column.float().mul_(weight[c, :, 0, 0]).mul_(s[:, None])
    return contribution.argmax(dim=1), y, xx


def _windowed(
    p: dict[str, Any], points: Points, group_start: Tensor, loc: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Any conv: gather each point's window ``(n, kh, kw, c_in)`` (zero outside the image, or
    the padding mode's values), contributions ``window * W[c]``, channel = argmax of their sum.

    Returns the channel within the group ``(n,)`` and the input position ``(n,), (n,)``.
    """
    x, weight = p["x"], p["weight"]
    height, width = x.shape[-2:]
    _, c_in, kh, kw = weight.shape
    (sh, sw), (dh, dw) = p["stride"], p["dilation"]
    top, bottom, left, right = p["padding"]
    b, c, y, xx, s = points.unbind(1)
    rows = y[:, None] * sh - top + torch.arange(kh, device=x.device) * dh  # (n, kh)
    cols = xx[:, None] * sw - left + torch.arange(kw, device=x.device) * dw  # (n, kw)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
        :, None, :
    ]  # (n, kh, kw)
    if p["mode"] != "zeros" and (top or bottom or left or right):
        source = F.pad(x, (left, right, top, bottom), mode=p["mode"])
        r_read, c_read, mask = rows + top, cols + left, None
    else:
        source = x
        r_read, c_read, mask = rows.clamp(0, height - 1), cols.clamp(0, width - 1), inside
    product = gather_windows(source, b, r_read, c_read, group_start, c_in).float()
    if mask is not None and not bool(mask.all()):
        product.mul_(mask[..., None])
    product.mul_(weight.permute(0, 2, 3, 1)[c])  # (n, kh, kw, c_in): window * W[c]
    k = (product.sum(dim=(1, 2)) * s[:, None]).argmax(dim=1)
    if loc == "center":
        new_y = (y * sh - top + dh * ((kh - 1) // 2)).clamp(0, height - 1)
        new_x = (xx * sw - left + dw * ((kw - 1) // 2)).clamp(0, width - 1)
        return k, new_y, new_x
    picked = product.gather(3, k[:, None, None, None].expand(-1, kh, kw, 1))[..., 0]
    picked = (picked * s[:, None, None]).masked_fill(~inside, -math.inf)  # padding never wins
    best = picked.flatten(1).argmax(dim=1)
    n = torch.arange(k.shape[0], device=x.device)
    return k, rows[n, best // kw].clamp(0, height - 1), cols[n, best % kw].clamp(0, width - 1)


def gather_windows(
    x: Tensor, b: Tensor, rows: Tensor, cols: Tensor, group_start: Tensor, c_in: int
) -> Tensor:
    """``x[b, rows, cols, group_start + (0..c_in)]`` (channels last) as ``(n, kh, kw, c_in)``.

    ``x`` (B,C,H,W); ``b, group_start`` (n,); ``rows`` (n,kh) and ``cols`` (n,kw) inside ``x``.
    Without groups the channel dim is sliced, not indexed: the gather then copies whole
    channel columns, several times faster than indexing every element.
    """
    if c_in == x.shape[1]:
        return x[b[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    channels = group_start[:, None] + torch.arange(c_in, device=x.device)
    return x[b[:, None, None, None], channels[:, None, None, :], rows[:, :, None, None],
             cols[:, None, :, None]]  # fmt: skip


def conv_params(walk: Walk, node: fx.Node) -> dict[str, Any]:
    """Input, weight, stride, dilation, groups, padding ``(top, bottom, left, right)``, mode."""
    x = walk.arg(node, 0, "input")
    if node.op == "call_module":
        m = walk.module.get_submodule(node.target)
        weight, stride, padding, dilation, groups = (
            m.weight,
            m.stride,
            m.padding,
            m.dilation,
            m.groups,
        )
        mode = m.padding_mode
    else:
        weight = walk.arg(node, 1, "weight")
        stride = walk.arg(node, 3, "stride", 1)
        padding = walk.arg(node, 4, "padding", 0)
        dilation = walk.arg(node, 5, "dilation", 1)
        groups = walk.arg(node, 6, "groups", 1)
        mode = "zeros"
    stride, dilation = _pair(stride), _pair(dilation)
    kernel = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "same":
            th, tw = (d * (k - 1) for d, k in zip(dilation, kernel, strict=True))
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)  # extra on the bottom/right
        else:
            pads = (0, 0, 0, 0)
    else:
        ph, pw = _pair(padding)
        pads = (ph, ph, pw, pw)
    return dict(
        x=x, weight=weight, stride=stride, dilation=dilation, groups=groups, padding=pads, mode=mode
    )


def max_pool(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Max pooling: follow the switches (recomputed with ``return_indices=True``)."""
    src = first_source(node, walk.active)[0]
    x = walk.arg(node, 0, "input")
    if node.op == "call_module":
        m = walk.module.get_submodule(node.target)
        if isinstance(m, nn.AdaptiveMaxPool2d):
            _, switches = F.adaptive_max_pool2d(x, m.output_size, return_indices=True)
        else:
            _, switches = F.max_pool2d(
                x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True
            )
    else:
        args, kwargs = walk.records[node]
        kwargs = {k: v for k, v in kwargs.items() if k != "return_indices"}
        _, switches = node.target(*args, **kwargs, return_indices=True)
    flat = switches[tuple(points[:, :-1].T)]
    width = x.shape[-1]
    coords = torch.stack([points[:, 0], points[:, 1], flat // width, flat % width], dim=1)
    return [(src, with_sign(coords, sign_of(x[tuple(coords.T)])))]


def avg_pool(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Average pooling (plain, adaptive, global): the argmax of ``s * input`` in the window."""
    src = first_source(node, walk.active)[0]
    x = walk.arg(node, 0, "input")
    height, width = x.shape[-2:]
    out_h, out_w = walk.shapes[node][-2:]
    oy, ox = points[:, 2], points[:, 3]
    if _is_adaptive(walk, node):
        y0, y1 = (oy * height) // out_h, ((oy + 1) * height + out_h - 1) // out_h
        x0, x1 = (ox * width) // out_w, ((ox + 1) * width + out_w - 1) // out_w
        size = (min(height, -(-height // out_h) + 1), min(width, -(-width // out_w) + 1))
    else:
        kernel, stride, padding = _avg_params(walk, node)
        y0, x0 = oy * stride[0] - padding[0], ox * stride[1] - padding[1]
        y1, x1 = y0 + kernel[0], x0 + kernel[1]
        size = kernel
    bounds = (y0.clamp(0, height), y1.clamp(0, height), x0.clamp(0, width), x1.clamp(0, width))
    y, xx = window_argmax(x, points[:, 0], points[:, 1], bounds, size, points[:, -1])
    coords = torch.stack([points[:, 0], points[:, 1], y, xx], dim=1)
    return [(src, with_sign(coords, sign_of(x[tuple(coords.T)])))]


def window_argmax(
    x: Tensor,
    b: Tensor,
    c: Tensor,
    bounds: tuple[Tensor, Tensor, Tensor, Tensor],
    size: tuple[int, int],
    sign: Tensor,
) -> tuple[Tensor, Tensor]:
    """Argmax of ``sign * x[b, c]`` inside per-point windows ``[y0, y1) x [x0, x1)``.

    ``x`` (B,C,H,W); ``b, c, sign`` (N,); ``size`` bounds the window extent. Returns ``(y, x)``.
    """
    y0, y1, x0, x1 = bounds
    height, width = x.shape[-2:]
    ry = y0[:, None] + torch.arange(size[0], device=x.device)  # (N, KH)
    rx = x0[:, None] + torch.arange(size[1], device=x.device)  # (N, KW)
    inside = (ry < y1[:, None])[:, :, None] & (rx < x1[:, None])[:, None, :]
    rows, cols = ry.clamp(max=height - 1), rx.clamp(max=width - 1)
    values = x[b[:, None, None], c[:, None, None], rows[:, :, None], cols[:, None, :]].float()
    values = (values * sign.float()[:, None, None]).masked_fill(~inside, -math.inf)
    best = values.flatten(1).argmax(dim=1)
    n = torch.arange(best.shape[0], device=x.device)
    return rows[n, best // size[1]], cols[n, best % size[1]]


def reduce(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """``mean`` / ``sum`` over some dims (e.g. a global pool ``x.mean((2, 3))``): argmax there."""
    src = first_source(node, walk.active)[0]
    x = walk.arg(node, 0, "input")
    dims = walk.arg(node, 1, "dim")
    keepdim = bool(walk.arg(node, 2, "keepdim", False))
    if dims is None or (isinstance(dims, (tuple, list)) and not dims):
        raise ValueError(f"CNN Fixations: {describe(walk.module, node)} reduces over the batch")
    dims = sorted({d % x.dim() for d in ((dims,) if isinstance(dims, int) else dims)})
    if 0 in dims:
        raise ValueError(f"CNN Fixations: {describe(walk.module, node)} reduces over the batch")
    kept = [d for d in range(x.dim()) if d not in dims]
    kept_coords = points[:, kept] if keepdim else points[:, : len(kept)]
    return [(src, reduce_points(x, dims, kept_coords, points[:, -1]))]


def reduce_points(x: Tensor, dims: Sequence[int], kept_coords: Tensor, sign: Tensor) -> Points:
    """Fixations on ``x`` for a reduction over ``dims``: the argmax of ``sign * x`` there.

    ``kept_coords`` (N, x.dim() - len(dims)) indexes the dims that remain, in order.
    """
    kept = [d for d in range(x.dim()) if d not in dims]
    kept_shape = [x.shape[d] for d in kept]
    reduced_shape = [x.shape[d] for d in dims]
    table = x.permute(*kept, *dims).reshape(math.prod(kept_shape), math.prod(reduced_shape))
    values = table[ravel(kept_coords, kept_shape)].float() * sign.float()[:, None]
    where = unravel(values.argmax(dim=1), reduced_shape)
    coords = torch.empty(kept_coords.shape[0], x.dim(), dtype=torch.long, device=x.device)
    coords[:, kept] = kept_coords
    coords[:, list(dims)] = where
    return with_sign(coords, sign_of(x[tuple(coords.T)]))


# ----------------------------------------------------------------------------- helpers


def _is_adaptive(walk: Walk, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(walk.module.get_submodule(node.target), nn.AdaptiveAvgPool2d)
    return node.target is F.adaptive_avg_pool2d


def _avg_params(walk: Walk, node: fx.Node) -> tuple[tuple[int, int], ...]:
    if node.op == "call_module":
        m = walk.module.get_submodule(node.target)
        kernel, stride, padding = m.kernel_size, m.stride, m.padding
    else:
        kernel = walk.arg(node, 1, "kernel_size")
        stride = walk.arg(node, 2, "stride") or kernel
        padding = walk.arg(node, 3, "padding", 0)
    return _pair(kernel), _pair(stride if stride else kernel), _pair(padding)


# ----------------------------------------------------------------------------- wrapped functions


def nested(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """A function that ``torch.fx.wrap`` kept whole (torchvision's ``shifted_window_attention``):
    traced on its recorded arguments (:func:`graph.trace_function`), run again with every input
    its rules read recorded, and walked through with the same rules, from the points on its
    result to its image-dependent input."""
    from . import fixation_walk as engine

    args, kwargs = walk.records[node]
    signal = [n for n in node.all_input_nodes if n in walk.active]
    if len(signal) != 1:
        raise ValueError(f"CNN Fixations: {describe(walk.module, node)} mixes several signals")
    cache = node.meta.setdefault("fw_nested", {})
    key = tuple(
        tuple(v.shape) if isinstance(v, Tensor) else repr(v) for v in (*args, *kwargs.values())
    )
    if key not in cache:
        try:
            cache[key] = trace_function(node.target, args, kwargs)
        except Exception as error:
            raise ValueError(
                f"CNN Fixations cannot look inside {describe(walk.module, node)} "
                f"({type(error).__name__}: {error})"
            ) from error
    inner, tensors = cache[key]
    first = args[0] if args else None
    if not (isinstance(first, Tensor) and node.args and node.args[0] is signal[0]):
        raise ValueError(
            f"CNN Fixations: the image-dependent input of {describe(walk.module, node)} "
            "must be its first argument"
        )
    active = signal_nodes(inner)
    out_node = next(n for n in inner.graph.nodes if n.op == "output").args[0]
    plan = engine.plan_walk(inner, out_node, active, rule_for, SUPPORTED)
    keep = {r for n, rule in plan.items() for r in rule.recorded(n)}
    recording = record_forward(inner, tuple(tensors), keep)
    inner_walk = Walk(inner, recording.records, recording.shapes, active, walk.loc)
    arrived = engine.walk_back(inner_walk, plan, out_node, points, recording.output)
    return [(signal[0], arrived)] if arrived.shape[0] else []


def nested_sources(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    return [n for n in node.all_input_nodes if n in active][:1]


def _is_python_function(target: Any) -> bool:
    module = getattr(target, "__module__", "") or ""
    return inspect.isfunction(target) and not module.startswith(("torch.", "_operator", "math"))


# ----------------------------------------------------------------------------- the table


PASS = Rule("pass", pass_through, first_source, distinct=True)
SCALE = Rule("scale", modern.scale, modern.signal_args, needs_values=True, distinct=True)
VIEW = Rule("view", view, first_source, distinct=True)
CAT = Rule("cat", cat, cat_sources, distinct=True)
ADD = Rule("add", add, operand_sources, needs_values=True, distinct=True)
LINEAR = Rule("linear", linear, first_source, needs_values=True)
CONV = Rule("conv2d", conv2d, first_source, needs_values=True)
MAX_POOL = Rule("max_pool", max_pool, first_source, needs_values=True)
AVG_POOL = Rule("avg_pool", avg_pool, first_source, needs_values=True)
REDUCE = Rule("reduce", reduce, first_source, needs_values=True)
ACTIVATION = Rule("activation", modern.activation, first_source, needs_values=True,
                  distinct=True)  # fmt: skip
NORM = Rule("norm", modern.norm, first_source, needs_values=True, distinct=True)
GATE = Rule("gate", modern.gate, modern.gate_sources, needs_values=True, distinct=True)
INDEX = Rule("index", modern.index_map, modern.index_sources, needs_values=True,
             also_records=modern.index_records)  # fmt: skip
RESIZE = Rule("resize", modern.resize, first_source, needs_values=True)
SDPA = Rule("attention", modern.sdpa, modern.sdpa_sources, needs_values=True)
BILINEAR = Rule("product", modern.bilinear, modern.bilinear_sources, needs_values=True)
NESTED = Rule("wrapped function", nested, nested_sources, needs_values=True)
MHA = Rule("multi-head attention", modern.mha, modern.mha_sources, needs_values=True,
           also_records=modern.mha_records)  # fmt: skip

SUBTRACTIONS = {operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__"}

_VIEWS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "flatten", "view",
          "reshape", "squeeze", "unsqueeze", "view_as", "reshape_as"}  # fmt: skip
_KIND_RULES = {
    "activation": ACTIVATION, "norm": NORM, "add": ADD, "gate": GATE, "resize": RESIZE,
    "identity": PASS, "scale": SCALE,
}  # fmt: skip


def rule_for(module: fx.GraphModule, node: fx.Node) -> Rule | None:
    """The rule of ``node`` (chosen by its :func:`graph.op_kind`), or ``None`` when CNN
    Fixations has none for it."""
    kind = op_kind(module, node)
    if kind in _KIND_RULES:
        return _KIND_RULES[kind]
    target = node.target
    sub = module.get_submodule(target) if node.op == "call_module" else None
    name = getattr(target, "__name__", target) if sub is None else None
    if kind == "conv":
        return CONV if isinstance(sub, nn.Conv2d) or target is F.conv2d else None
    if kind == "linear":
        if isinstance(sub, nn.Linear) or target is F.linear:
            return LINEAR
        return BILINEAR if name in ("matmul", "mm", "bmm", "einsum", "__matmul__") else None
    if kind == "pool_max":
        if isinstance(sub, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            return MAX_POOL
        if target in (F.max_pool2d, F.adaptive_max_pool2d):
            return MAX_POOL
        return REDUCE if name == "amax" else None
    if kind == "pool_avg":
        if isinstance(sub, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            return AVG_POOL
        if target in (F.avg_pool2d, F.adaptive_avg_pool2d):
            return AVG_POOL
        return REDUCE if name in ("mean", "sum") else None
    if kind == "reshape":
        return VIEW if _is_plain_view(node) else INDEX
    if kind == "cat":
        return CAT if target in (torch.cat, torch.concat, torch.concatenate) else INDEX
    if kind == "split":
        source = node.args[0] if node.args else None
        if (
            target is operator.getitem
            and isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(module.get_submodule(source.target), nn.MultiheadAttention)
        ):
            return MHA if node.args[1] == 0 else None
        return INDEX
    if kind == "attention":
        if name == "scaled_dot_product_attention":
            return SDPA
        if name in ("matmul", "bmm", "mm", "einsum", "__matmul__"):
            return BILINEAR
        if name in ("softmax", "log_softmax") or isinstance(sub, (nn.Softmax, nn.LogSoftmax)):
            return ACTIVATION  # attention weights: only reached when both factors are weights
    if node.op == "call_function" and _is_python_function(target):
        return NESTED
    return None


def _is_plain_view(node: fx.Node) -> bool:
    """flatten / view / reshape / squeeze: the row-major order is kept (:func:`view`)."""
    if node.op == "call_module":
        return False
    try:
        return node.target in _VIEWS
    except TypeError:
        return False


SUPPORTED = (
    "Conv2d, Linear, MaxPool2d, AvgPool2d, Adaptive{Avg,Max}Pool2d, mean/sum/amax over dims, "
    "add/sub, cat/stack, every reshape/permute/transpose/flatten/split/chunk/getitem/pad, "
    "activations (ReLU, GELU, SiLU, Hardswish, sigmoid, ...), norms (BatchNorm, LayerNorm, "
    "GroupNorm, RMSNorm), gates (x * sigmoid(...)), scales, upsampling, attention "
    "(nn.MultiheadAttention, scaled_dot_product_attention, softmax(q k) @ v, einsum), "
    "Dropout, Identity"
)
