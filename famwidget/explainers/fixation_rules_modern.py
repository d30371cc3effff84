"""CNN Fixations through modern networks: gates, norms, smooth activations, index plumbing,
resizing and attention.

Every rule follows the principle of the paper (Mopuri et al.): from the neurons already
selected, go to the inputs with the largest positive contribution to them. The sign column ``s``
of a fixation is the sign of the value being explained; where an op maps a value of one sign to
one of the other, the sign flips. Each rule moves all points of a node at once, with tensor ops.

=================================  ========================================================
kind (:func:`graph.op_kind`)       rule
=================================  ========================================================
activation (GELU, SiLU, sigmoid,   same index; ``s`` flips where the output's sign differs
Hardswish, ...)                    from the input's (a negative GELU input, ...)
norm (BatchNorm, LayerNorm over    same index (the normalisation scales each position by a
channels or tokens, GroupNorm,     positive factor); a negative affine weight at the
RMSNorm, LayerNorm2d)              point's channel flips ``s``
gate ``x * g`` / ``x / g``         the signal branch ``x`` carries the location, the gate
                                   only scales it: follow ``x`` at the same index, with ``s``
                                   times the sign of the gate there
scale by a parameter / buffer      same index; a negative factor there flips ``s``
reshape, permute, transpose,       exact index bookkeeping: the op is run once on a tensor
flatten, channel shuffle, pad,     of the source indices, so each output position reads the
split/chunk/getitem, stack, roll   input position it came from (padding: dropped)
resize (interpolate, Upsample)     the nearest source pixel
attention ``softmax(qk) @ v``      the token ``j`` with the largest ``s * a_ij * v_jd``
                                   (the value path; the weights only select)
nn.MultiheadAttention              the head and token with the largest
                                   ``s * a_hij * (v_hj . w_hd)`` (``w`` the output
                                   projection's row), then the input channel with the
                                   largest contribution through ``W_v`` and ``w``
matmul / einsum of two signals     the contracted index with the largest product, both
                                   operands (only the values when one is attention weights)
=================================  ========================================================
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .fixation_walk import (
    Points,
    Routed,
    Walk,
    _is_number,
    chunks,
    first_source,
    ravel,
    sign_of,
    unravel,
    with_sign,
)
from .graph import describe, op_kind


def _strict_sign(v: Tensor) -> Tensor:
    return torch.sign(v.float()).long()


def _flip(points: Points, flip: Tensor) -> Points:
    s = torch.where(flip, -points[:, -1], points[:, -1])
    return with_sign(points[:, :-1], s)


def _same_shape(walk: Walk, node: fx.Node, src: fx.Node) -> None:
    if walk.shapes[src] != walk.shapes[node]:
        raise ValueError(
            f"CNN Fixations: {describe(walk.module, node)} changes the shape "
            f"{tuple(walk.shapes[src])} -> {tuple(walk.shapes[node])}; no rule for that"
        )


def signal_args(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    """The image-dependent inputs of ``node``, in order, each once."""
    return list(dict.fromkeys(n for n in node.all_input_nodes if n in active))


# ----------------------------------------------------------------------------- activations


def activation(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Elementwise activations: same index; ``s`` flips where the output's sign is the opposite
    of the input's (a zero output, as ReLU gives, keeps ``s``)."""
    (src,) = first_source(node, walk.active) or [None]
    if src is None:
        return []
    _same_shape(walk, node, src)
    x = walk.arg(node, 0, "input")
    index = tuple(points[:, :-1].T)
    v = x[index]
    out = _elementwise(walk, node, x, v, index)
    flip = (_strict_sign(v) * _strict_sign(out)) < 0
    return [(src, _flip(points, flip))]


def _elementwise(walk: Walk, node: fx.Node, x: Tensor, v: Tensor, index: tuple) -> Tensor:
    """The activation applied to the gathered inputs ``v`` ``(N,)`` (or, where that fails, to
    a copy of the whole input, then gathered)."""
    args, kwargs = walk.records[node]
    if node.op == "call_module":
        m = walk.module.get_submodule(node.target)
        if isinstance(m, nn.PReLU):
            w = m.weight if m.weight.numel() == 1 else m.weight[index[1]]
            return torch.where(v >= 0, v, w.to(v.dtype) * v)

        def run(t: Tensor) -> Tensor:
            return m(t)
    elif node.op == "call_method":

        def run(t: Tensor) -> Tensor:
            return getattr(t, node.target)(*args[1:], **kwargs)
    else:

        def run(t: Tensor) -> Tensor:
            return node.target(t, *args[1:], **kwargs)

    try:
        out = run(v.clone())
        if out.shape == v.shape:
            return out
    except (RuntimeError, TypeError, ValueError, IndexError):
        pass
    return run(x.clone())[index]


# ----------------------------------------------------------------------------- norms

_FUNCTION_WEIGHTS = {  # function name -> (position of the weight argument, per channel?)
    "layer_norm": (2, False),
    "rms_norm": (2, False),
    "batch_norm": (3, True),
    "instance_norm": (3, True),
    "group_norm": (2, True),
}


def norm(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Normalisations: same index (the recorded per-position scale ``1/σ`` is positive); the
    sign of the affine weight at the point's channel (``dim 1`` for BatchNorm / GroupNorm /
    LayerNorm2d, the trailing dims for LayerNorm / RMSNorm over tokens) multiplies ``s``."""
    (src,) = first_source(node, walk.active) or [None]
    if src is None:
        return []
    _same_shape(walk, node, src)
    weight, per_channel = _norm_weight(walk, node)
    if weight is None or not isinstance(weight, Tensor) or bool((weight >= 0).all()):
        return [(src, points)]
    coords = points[:, :-1]
    if per_channel:
        w = weight.reshape(-1)[coords[:, 1]]
    else:
        k = weight.dim()
        w = weight.reshape(-1)[ravel(coords[:, coords.shape[1] - k :], weight.shape)]
    return [(src, _flip(points, w < 0))]


def _norm_weight(walk: Walk, node: fx.Node) -> tuple[Tensor | None, bool]:
    if node.op == "call_module":
        m = walk.module.get_submodule(node.target)
        weight = getattr(m, "weight", None)
        if not isinstance(weight, Tensor):
            return None, True
        if isinstance(m, nn.LayerNorm) and type(m).__name__ != "LayerNorm2d":
            return weight, False
        name = type(m).__name__
        rank = len(walk.shapes[node])
        trailing = tuple(walk.shapes[node][rank - weight.dim() :]) == tuple(weight.shape)
        channels = rank >= 2 and walk.shapes[node][1] == weight.numel()
        if name.endswith("2d") or "Batch" in name or "Group" in name or "Instance" in name:
            return weight, channels or not trailing
        return weight, not trailing
    name = getattr(node.target, "__name__", "")
    if name not in _FUNCTION_WEIGHTS:
        return None, True
    position, per_channel = _FUNCTION_WEIGHTS[name]
    return walk.arg(node, position, "weight"), per_channel


# ----------------------------------------------------------------------------- gates and scales

_GATE_MAKERS = {"sigmoid", "hardsigmoid", "softmax", "tanh", "Sigmoid", "Hardsigmoid",
                "Softmax", "Tanh", "sigmoid_", "tanh_"}  # fmt: skip


def gate_parts(walk: Walk, node: fx.Node) -> tuple[fx.Node, fx.Node]:
    """``(signal operand, gate operand)`` of a product or quotient of two signals.

    The signal is the numerator of a quotient; of a product, the operand with the output's
    shape when the other broadcasts (a squeeze-excitation gate ``(B,C,1,1)``), else the
    operand that is not made by a sigmoid / softmax / tanh, else the first.
    """
    a, b = node.args[0], node.args[1]
    if _is_division(node):
        return a, b
    out = walk.shapes[node]
    full_a, full_b = walk.shapes[a] == out, walk.shapes[b] == out
    if full_a != full_b:
        return (a, b) if full_a else (b, a)
    if _made_by_gate(walk.module, a) and not _made_by_gate(walk.module, b):
        return b, a
    return a, b


def _is_division(node: fx.Node) -> bool:
    return node.target in (operator.truediv, operator.itruediv, torch.div, torch.true_divide,
                           "div", "div_", "true_divide")  # fmt: skip


def _made_by_gate(gm: fx.GraphModule, node: Any) -> bool:
    for _ in range(8):
        if not isinstance(node, fx.Node):
            return False
        if node.op == "call_module":
            name = type(gm.get_submodule(node.target)).__name__
        elif node.op in ("call_function", "call_method"):
            name = getattr(node.target, "__name__", node.target)
        else:
            return False
        if name in _GATE_MAKERS:
            return True
        if op_kind(gm, node) not in ("identity", "reshape") or not node.args:
            return False
        node = node.args[0]
    return False


def gate(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """A product of two signals ``x * g`` (``x / g``): the signal branch ``x`` carries the
    location and the gate only scales it, so the point stays at the same index of ``x``, with
    ``s`` times the sign of ``g`` there. Which operand is the signal: :func:`gate_parts`."""
    signal, gate_node = gate_parts(walk, node)
    args, _ = walk.records[node]
    out_shape = walk.shapes[node]
    sig_shape = walk.shapes[signal]
    if len(sig_shape) != len(out_shape) or any(
        a != b and a != 1 for a, b in zip(sig_shape, out_shape, strict=True)
    ):
        raise ValueError(f"CNN Fixations: {describe(walk.module, node)} broadcasts its signal")
    coords = broadcast_coords(points[:, :-1], sig_shape, out_shape)
    g = args[list(node.args[:2]).index(gate_node)]
    g_values = gather_broadcast(g, points[:, :-1], out_shape)
    s = points[:, -1] * torch.where(g_values < 0, -1, 1)
    return [(signal, with_sign(coords, s))]


def gate_sources(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    a = node.args[0] if node.args else None
    b = node.args[1] if len(node.args) > 1 else None
    return [n for n in (a, b) if isinstance(n, fx.Node) and n in active]


def broadcast_coords(coords: Tensor, shape: Any, out_shape: Any) -> Tensor:
    """Index into a tensor of ``shape`` (same rank) that broadcasts to ``out_shape``."""
    coords = coords.clone()
    for d, size in enumerate(shape):
        if size == 1 and out_shape[d] != 1:
            coords[:, d] = 0
    return coords


def gather_broadcast(t: Any, coords: Tensor, out_shape: Any) -> Tensor:
    """``t`` (a number or a tensor broadcast to ``out_shape``) at ``coords`` ``(N, rank)``."""
    if not isinstance(t, Tensor):
        return torch.full((coords.shape[0],), float(t), device=coords.device)
    rank = len(out_shape)
    lead = rank - t.dim()
    own = coords[:, lead:]
    own = broadcast_coords(own, t.shape, tuple(out_shape)[lead:])
    return t[tuple(own.T)].float() if t.dim() else t.float().expand(coords.shape[0])


def scale(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """``x * c``, ``c * x``, ``x / c``, ``-x`` with ``c`` a number, a parameter or a buffer:
    same index on ``x``; where ``c`` is negative there, ``s`` flips."""
    sources = signal_args(node, walk.active)
    if not sources:
        return []
    src = sources[0]
    _same_shape(walk, node, src)
    if node.target in (operator.neg, torch.neg, "neg"):
        return [(src, _flip(points, torch.ones_like(points[:, -1], dtype=torch.bool)))]
    args, kwargs = walk.records[node]
    operands = [*args[:2], kwargs.get("other")][:2]
    position = list(node.args[:2]).index(src) if src in node.args[:2] else 0
    factor = operands[1 - position]
    if factor is None or (_is_number(factor) and factor >= 0):
        return [(src, points)]
    values = gather_broadcast(factor, points[:, :-1], walk.shapes[node])
    return [(src, _flip(points, values < 0))]


# ----------------------------------------------------------------------------- index plumbing


def index_map(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Ops that only move values (reshape, permute, transpose, flatten, channel shuffle, pad,
    getitem, stack, roll, expand, a split's piece): exact index bookkeeping.

    The op is run on tensors that hold, in place of each image-dependent input, the (1-based)
    flat index of every element, float64 (exact below 2^53); at each fixation the result
    names the input element it came from. A 0 there (padding, a constant input) drops it.
    """
    op_node = node
    pick = None
    source = node.args[0] if node.args else None
    if (
        node.target is operator.getitem
        and isinstance(source, fx.Node)
        and op_kind(walk.module, source) == "split"
        and source.target is not operator.getitem
    ):
        op_node, pick = source, node.args[1]
    sources = signal_args(op_node, walk.active)
    if not sources:
        return []
    device = points.device
    table, offsets, ends = {}, [], []
    total = 0
    for src in sources:
        shape = walk.shapes.get(src)
        if shape is None:
            raise ValueError(
                f"CNN Fixations: {describe(walk.module, node)} takes the several results of "
                f"{describe(walk.module, src)} at once; index them first (a, b = x.chunk(2))"
            )
        n = math.prod(shape)
        table[src] = torch.arange(total + 1, total + n + 1, dtype=torch.float64, device=device)
        table[src] = table[src].view(shape)
        offsets.append(total)
        total += n
        ends.append(total)
    args, kwargs = walk.records[op_node]
    new_args = _substitute(op_node.args, args, table)
    new_kwargs = _substitute(op_node.kwargs, kwargs, table)
    with torch.autocast(device.type, enabled=False):
        result = _run(walk.module, op_node, new_args, new_kwargs)
    if pick is not None:
        result = result[pick]
    if not isinstance(result, Tensor) or result.shape != walk.shapes[node]:
        raise ValueError(
            f"CNN Fixations cannot follow the indices through {describe(walk.module, node)}"
        )
    found = result.reshape(-1)[ravel(points[:, :-1], result.shape)].long()
    kept = found > 0
    found, s = found[kept] - 1, points[kept][:, -1]
    piece = torch.bucketize(found, torch.tensor(ends, device=device), right=True)
    routed: Routed = []
    for k, src in enumerate(sources):
        mine = piece == k
        if bool(mine.any()):
            coords = unravel(found[mine] - offsets[k], walk.shapes[src])
            routed.append((src, with_sign(coords, s[mine])))
    return routed


def index_sources(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    source = node.args[0] if node.args else None
    if (
        node.target is operator.getitem
        and isinstance(source, fx.Node)
        and source.op != "placeholder"
        and source not in active | {None}
    ):
        return []
    if node.target is operator.getitem and isinstance(source, fx.Node) and _is_split(source):
        return signal_args(source, active)
    return signal_args(node, active)


def _is_split(node: fx.Node) -> bool:
    return node.meta.get("fw_kind") == "split" and node.target is not operator.getitem


def index_records(node: fx.Node) -> list[fx.Node]:
    source = node.args[0] if node.args else None
    if node.target is operator.getitem and isinstance(source, fx.Node) and _is_split(source):
        return [source]
    return []


def _substitute(template: Any, recorded: Any, table: dict[fx.Node, Tensor]) -> Any:
    """``recorded`` with the image-dependent inputs (nodes of ``template``) replaced."""
    if isinstance(template, fx.Node):
        return table.get(template, recorded)
    if isinstance(template, (tuple, list)):
        items = [_substitute(t, r, table) for t, r in zip(template, recorded, strict=True)]
        return type(template)(items) if isinstance(template, tuple) else items
    if isinstance(template, dict):
        return {k: _substitute(template[k], recorded[k], table) for k in template}
    if isinstance(template, slice):
        return recorded
    return recorded


def _run(gm: fx.GraphModule, node: fx.Node, args: Any, kwargs: Any) -> Any:
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return node.target(*args, **kwargs)


# ----------------------------------------------------------------------------- resize


def resize(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """Interpolation / upsampling: each output pixel goes to its nearest source pixel
    (``floor(o * in / out)`` for mode "nearest", the pixel under the output pixel's centre
    otherwise)."""
    (src,) = first_source(node, walk.active) or [None]
    if src is None:
        return []
    x = walk.arg(node, 0, "input")
    before, after = walk.shapes[src], walk.shapes[node]
    if node.op == "call_module":
        mode = getattr(walk.module.get_submodule(node.target), "mode", "nearest")
    else:
        mode = walk.arg(node, 3, "mode", "nearest")
    coords = points[:, :-1].clone()
    for d in range(2, len(before)):
        o = coords[:, d].double()
        ratio = before[d] / after[d]
        where = o * ratio if mode == "nearest" else (o + 0.5) * ratio
        coords[:, d] = where.floor().long().clamp(0, before[d] - 1)
    return [(src, with_sign(coords, sign_of(x[tuple(coords.T)])))]


# ----------------------------------------------------------------------------- attention


def _attention_weights(gm: fx.GraphModule, node: Any, active: set[fx.Node]) -> bool:
    """Whether ``node`` holds attention weights: a softmax of kind ``attention``, seen through
    dropout, casts and views."""
    for _ in range(8):
        if not isinstance(node, fx.Node) or node not in active:
            return False
        kind = op_kind(gm, node)
        name = (
            getattr(node.target, "__name__", node.target)
            if node.op != "call_module"
            else (type(gm.get_submodule(node.target)).__name__)
        )
        if kind == "attention" and name in ("softmax", "Softmax", "log_softmax"):
            return True
        if kind not in ("identity", "reshape") or not node.args:
            return False
        node = node.args[0]
    return False


def sdpa(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """``F.scaled_dot_product_attention(q, k, v)``: output ``(…, i, d)`` = ``Σ_j a_ij v_jd``;
    the point goes to the value ``(…, j, d)`` with the largest ``s * a_ij * v_jd``."""
    q = walk.arg(node, 0, "query")
    k = walk.arg(node, 1, "key")
    v = walk.arg(node, 2, "value")
    mask = walk.arg(node, 3, "attn_mask")
    causal = bool(walk.arg(node, 5, "is_causal", False))
    scale_ = walk.arg(node, 6, "scale")
    value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value")
    if not (isinstance(value, fx.Node) and value in walk.active):
        return []
    if q.dim() != v.dim() or q.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"CNN Fixations: {describe(walk.module, node)}: grouped heads")
    scale_ = 1 / math.sqrt(q.shape[-1]) if scale_ is None else scale_
    logits = (q.float() @ k.float().transpose(-2, -1)) * scale_
    if causal:
        size = logits.shape[-2:]
        upper = torch.ones(size, dtype=torch.bool, device=q.device).triu(1)
        logits = logits.masked_fill(upper, -math.inf)
    if mask is not None:
        logits = (
            logits.masked_fill(~mask, -math.inf)
            if mask.dtype == torch.bool
            else (logits + mask.float())
        )
    a = logits.softmax(dim=-1)
    lead = math.prod(a.shape[:-2])
    coords = points[:, :-1]
    row = ravel(coords[:, :-2], a.shape[:-2])
    i, d = coords[:, -2], coords[:, -1]
    a_rows = a.reshape(lead, a.shape[-2], a.shape[-1])[row, i]  # (N, S)
    v_cols = v.float().reshape(lead, v.shape[-2], v.shape[-1]).transpose(1, 2)[row, d]  # (N, S)
    j = (a_rows * v_cols * points[:, -1:].float()).argmax(dim=1)
    out = coords.clone()
    out[:, -2] = j
    return [(value, with_sign(out, sign_of(v[tuple(out.T)])))]


def sdpa_sources(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value")
    return [value] if isinstance(value, fx.Node) and value in active else []


_MATMUL_NAMES = {"matmul", "bmm", "mm", "__matmul__"}


def _equation(walk: Walk, node: fx.Node) -> tuple[str, list[fx.Node | Any], list[Tensor]]:
    """The einsum equation of a product node, its two operand nodes, their recorded values."""
    args, _ = walk.records[node]
    name = getattr(node.target, "__name__", node.target)
    if name == "einsum":
        equation = args[0].replace(" ", "")
        operands = list(node.args[1:])
        values = list(args[1:])
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands, values = list(operands[0]), list(values[0])
        if "..." in equation or len(operands) != 2 or "->" not in equation:
            raise ValueError(f"CNN Fixations: {describe(walk.module, node)}: einsum form")
        return equation, operands, values
    a, b = args[0], args[1]
    if name not in _MATMUL_NAMES and node.target is not operator.matmul:
        raise ValueError(f"CNN Fixations has no rule for {describe(walk.module, node)}")
    if a.dim() < 2 or b.dim() < 2 or a.shape[:-2] != b.shape[:-2]:
        raise ValueError(f"CNN Fixations: {describe(walk.module, node)} broadcasts")
    letters = "abcdefgh"[: a.dim() - 2]
    return f"{letters}ij,{letters}jk->{letters}ik", list(node.args[:2]), [a, b]


def bilinear(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """``A @ B`` or a two-operand einsum of two signals: for each point, the contracted index
    with the largest ``s * A[..] * B[..]``; both operands get the point, except that
    attention weights (a softmax's result) only select: then only the values get it."""
    equation, operands, values = _equation(walk, node)
    ins, out = equation.split("->")
    in_a, in_b = ins.split(",")
    contracted = [c for c in dict.fromkeys(in_a + in_b) if c not in out]
    sizes = {c: values[0].shape[k] for k, c in enumerate(in_a)}
    sizes.update({c: values[1].shape[k] for k, c in enumerate(in_b)})
    coords = points[:, :-1]
    fixed = {c: coords[:, k] for k, c in enumerate(out)}
    shape_c = [sizes[c] for c in contracted]
    n_c = math.prod(shape_c)
    s = points[:, -1].float()
    best = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
    tables = []
    for letters, value in zip((in_a, in_b), values, strict=True):
        kept = [c for c in letters if c not in contracted]
        order = [letters.index(c) for c in kept] + [letters.index(c) for c in contracted]
        shape_k = [sizes[c] for c in kept]
        table = value.float().permute(*order).reshape(math.prod(shape_k), n_c)
        tables.append((table, kept, shape_k))
    for part in chunks(points.shape[0], 2 * n_c):
        product = s[part, None].clone()
        for table, kept, shape_k in tables:
            key = (
                ravel(torch.stack([fixed[c][part] for c in kept], 1), shape_k)
                if kept
                else (torch.zeros_like(best[part]))
            )
            product = product * table[key]
        best[part] = product.argmax(dim=1)
    where = unravel(best, shape_c)
    full = {**fixed, **{c: where[:, k] for k, c in enumerate(contracted)}}
    routed: Routed = []
    weights = [_attention_weights(walk.module, o, walk.active) for o in operands]
    for k, (letters, operand, value) in enumerate(zip((in_a, in_b), operands, values,
                                                      strict=True)):  # fmt: skip
        if not (isinstance(operand, fx.Node) and operand in walk.active):
            continue
        if weights[k] and not weights[1 - k]:
            continue
        c = torch.stack([full[ch] for ch in letters], dim=1)
        routed.append((operand, with_sign(c, sign_of(value[tuple(c.T)]))))
    return routed


def bilinear_sources(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    if getattr(node.target, "__name__", "") == "einsum":
        rest = node.args[1:]
        if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
            rest = rest[0]
    else:
        rest = node.args[:2]
    return list(dict.fromkeys(a for a in rest if isinstance(a, fx.Node) and a in active))


def mha(walk: Walk, node: fx.Node, points: Points) -> Routed:
    """``nn.MultiheadAttention(q, k, v)[0]`` (batch first): output ``(b, i, d)`` =
    ``Σ_h Σ_j a_hij (v_hj . w_hd)`` with ``v_hj = W_v^h x_j`` and ``w_hd`` the output
    projection's row ``d`` restricted to head ``h``. The point goes to the head and token with
    the largest ``s * a_hij * (v_hj . w_hd)``, then to the value input's channel ``c`` with
    the largest ``s * x_jc * (w_hd . W_v^h[:, c])``."""
    producer = node.args[0]
    m = walk.module.get_submodule(producer.target)
    args, kwargs = walk.records[producer]
    names = ("query", "key", "value")
    q, k, v = (args[i] if len(args) > i else kwargs[n] for i, n in enumerate(names))
    value_node = producer.args[2] if len(producer.args) > 2 else producer.kwargs.get("value")
    if not m.batch_first:
        raise ValueError(
            f"CNN Fixations: {describe(walk.module, producer)} is not batch_first; only "
            "(batch, tokens, channels) attention is supported"
        )
    if not (isinstance(value_node, fx.Node) and value_node in walk.active):
        return []
    e, h = m.embed_dim, m.num_heads
    hd = e // h
    if m._qkv_same_embed_dim:
        wq, wk, wv = m.in_proj_weight.float().chunk(3)
    else:
        wq, wk, wv = (t.float() for t in (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight))
    bq, bk, bv = (m.in_proj_bias.float().chunk(3) if m.in_proj_bias is not None
                  else (None, None, None))  # fmt: skip
    qh = F.linear(q.float(), wq, bq).unflatten(-1, (h, hd)).transpose(1, 2)  # (B,H,L,hd)
    kh = F.linear(k.float(), wk, bk).unflatten(-1, (h, hd)).transpose(1, 2)
    vh = F.linear(v.float(), wv, bv).unflatten(-1, (h, hd))  # (B,S,H,hd)
    logits = qh @ kh.transpose(-2, -1) / math.sqrt(hd)  # (B,H,L,S)
    mask = kwargs.get("attn_mask", args[5] if len(args) > 5 else None)
    padding = kwargs.get("key_padding_mask", args[3] if len(args) > 3 else None)
    if mask is not None:
        logits = (
            logits.masked_fill(mask, -math.inf)
            if mask.dtype == torch.bool
            else (logits + mask.float())
        )
    if padding is not None:
        logits = logits.masked_fill(padding[:, None, None, :].bool(), -math.inf)
    a = logits.softmax(dim=-1)
    w_out = m.out_proj.weight.float().view(e, h, hd)  # (D, H, hd)
    through = torch.einsum("bjhe,dhe->bhjd", vh, w_out)  # (B,H,S,D): v_hj . w_hd
    b, i, d, s = points.unbind(1)
    score = a[b, :, i, :] * through[b, :, :, d] * s[:, None, None].float()  # (N,H,S)
    best = score.flatten(1).argmax(dim=1)
    head, j = best // a.shape[-1], best % a.shape[-1]
    w_eff = torch.einsum("dhe,hec->hdc", w_out, wv.view(h, hd, -1))  # (H, D, C)
    contribution = v.float()[b, j] * w_eff[head, d] * s[:, None].float()  # (N, C)
    c = contribution.argmax(dim=1)
    coords = torch.stack([b, j, c], dim=1)
    return [(value_node, with_sign(coords, sign_of(v[b, j, c])))]


def mha_sources(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    producer = node.args[0]
    value = producer.args[2] if len(producer.args) > 2 else producer.kwargs.get("value")
    return [value] if isinstance(value, fx.Node) and value in active else []


def mha_records(node: fx.Node) -> list[fx.Node]:
    return [node.args[0]]
