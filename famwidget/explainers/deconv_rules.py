"""The deconvnet's backward rules, one per op kind of :func:`famwidget.explainers.graph.op_kind`.

Every rule maps the signal ``r`` at an op's output to its signal inputs (see
:mod:`famwidget.explainers.deconv` for the list). The rules that read values get them from the
recorded forward pass; the linear ones (reshapes, splits, concatenation, resizing, average
pooling, linear layers, scaling) are applied as their exact transpose: the vector-Jacobian
product of the op replayed on zeros of the recorded input shapes (a linear op's Jacobian does
not depend on where it is taken), which for an index mapping (permute, view, chunk, channel
shuffle, ``getitem``) is exactly its inverse mapping, with zeros where nothing was selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .graph import describe, op_kind

RELU_RULES = ("guided", "deconvnet")
BN_RULES = ("scale", "identity")

PASSABLE = (
    "conv", "conv_transpose", "linear", "activation", "norm", "pool_max", "pool_avg", "reshape",
    "split", "cat", "add", "gate", "scale", "resize", "identity",
)  # fmt: skip
"""The op kinds the deconvnet has a rule for; ``attention`` and ``other`` have none."""


_GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.Softmax)
_GATE_FUNCTIONS = {torch.sigmoid, torch.tanh, F.sigmoid, F.hardsigmoid, F.tanh, F.softmax}
_GATE_METHODS = {"sigmoid", "sigmoid_", "tanh", "tanh_", "softmax"}
_DIVS = {"div", "div_", "true_divide", "__truediv__"}


@dataclass
class Slot:
    """Where a signal tensor goes back into a recorded op's arguments: its shape and dtype,
    and its value where the rule needs it (max pooling's switches)."""

    index: int
    shape: torch.Size
    dtype: torch.dtype
    value: Tensor | None = None


@dataclass
class Replay:
    """A linear op ready to be transposed: its arguments with :class:`Slot` for the signal."""

    args: Any
    kwargs: Any
    sources: list[fx.Node]
    slots: list[Slot]


def zip_args(template: Any, values: Any, fn: Any) -> Any:
    """Walk ``node.args`` (``template``) and their recorded ``values`` in parallel; every node
    ``n`` of the template becomes ``fn(n, value)``, every other leaf keeps its value."""
    if isinstance(template, fx.Node):
        return fn(template, values)
    if isinstance(template, (tuple, list)):
        items = [zip_args(t, v, fn) for t, v in zip(template, values, strict=True)]
        return tuple(items) if isinstance(template, tuple) else items
    if isinstance(template, dict):
        return {k: zip_args(template[k], values[k], fn) for k in template}
    if isinstance(template, slice):
        return slice(
            zip_args(template.start, values.start, fn),
            zip_args(template.stop, values.stop, fn),
            zip_args(template.step, values.step, fn),
        )
    return values


def replay_record(node: fx.Node, record: tuple, signal: set, keep_values: bool) -> Replay:
    """Turn the recorded ``(args, kwargs)`` of ``node`` into a :class:`Replay`."""
    sources: list[fx.Node] = []
    slots: list[Slot] = []

    def slot(n: fx.Node, value: Any) -> Any:
        if n not in signal:
            return value
        if not isinstance(value, Tensor):
            raise ValueError(f"a signal input of node {node.name!r} is not one tensor")
        kept = value.detach().clone() if keep_values else None
        slots.append(Slot(len(slots), value.shape, value.dtype, kept))
        sources.append(n)
        return slots[-1]

    args = zip_args(node.args, record[0], slot)
    kwargs = zip_args(node.kwargs, record[1], slot)
    return Replay(args, kwargs, sources, slots)


def transpose(execute: Any, node: fx.Node, replay: Replay, r: Tensor | dict) -> list:
    """``[(source, signal)]``: the vector-Jacobian product of the replayed op.

    ``r`` is the signal at the output, or ``{index: signal}`` for an op with several outputs
    (``chunk``, ``split``, ``unbind``), where the missing outputs get zeros.
    """
    if not replay.slots:
        return []
    with torch.enable_grad():
        leaves = [_leaf(s, _dev(r)) for s in replay.slots]
        copies = [leaf.clone() for leaf in leaves]  # in-place ops must not touch the leaves

        def fill(a: Any) -> Any:
            return copies[a.index] if isinstance(a, Slot) else a

        args = fx.node.map_aggregate(replay.args, fill)
        kwargs = fx.node.map_aggregate(replay.kwargs, fill)
        out = execute(node, args, kwargs)
        if isinstance(r, dict):
            outs = [out[i] for i in r]
            grads_out = [r[i].to(o.dtype) for i, o in zip(r, outs, strict=True)]
        else:
            outs, grads_out = [out], [r.to(out.dtype)]
        grads = torch.autograd.grad(outs, leaves, grad_outputs=grads_out, allow_unused=True)
    return [(n, g) for n, g in zip(replay.sources, grads, strict=True) if g is not None]


def _leaf(slot: Slot, device: torch.device) -> Tensor:
    """The point where the op is replayed: the recorded value where the rule reads it (max
    pooling's switches), else zeros (a linear op's transpose does not depend on it)."""
    value = slot.value
    if value is None:
        value = torch.zeros(slot.shape, dtype=slot.dtype, device=device)
    return value.detach().requires_grad_(True)


def _dev(r: Tensor | dict) -> torch.device:
    return next(iter(r.values())).device if isinstance(r, dict) else r.device


# ----------------------------------------------------------------------------- convolutions


def conv_spec(gm: fx.GraphModule, node: fx.Node, record: tuple) -> Any:
    """The convolution's weight and geometry, from the module or the ``F.conv*d`` arguments."""
    if node.op == "call_module":
        return gm.get_submodule(node.target)
    args, kwargs = record
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    given = dict(zip(names, args, strict=False)) | dict(kwargs)
    weight = given["weight"]
    n = weight.dim() - 2

    def tup(v: Any, default: int) -> tuple:
        v = default if v is None else v
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n

    padding = given.get("padding", 0)
    return SimpleNamespace(
        weight=weight,
        kernel_size=tuple(weight.shape[2:]),
        stride=tup(given.get("stride"), 1),
        padding=padding if isinstance(padding, str) else tup(padding, 0),
        dilation=tup(given.get("dilation"), 1),
        groups=int(given.get("groups") or 1),
    )


def conv_transpose(
    signal: Tensor, conv: Any, in_size: tuple[int, int], stride_fix: bool = True
) -> Tensor:
    """Send ``signal`` ``(B,C_out,h,w)`` back through the 2-D convolution ``conv`` (a module or
    anything with its ``weight``, ``stride``, ``padding``, ``dilation``, ``groups``) to
    ``(B,C_in,H_in,W_in)``; grouped and depthwise convolutions alike.

    Stride 1: the transposed convolution with the forward weights (the bias is ignored).
    Stride s > 1 with ``stride_fix``: nearest-neighbour upsample (output ``o`` covers stride-1
    positions ``o*s .. o*s+s-1``) to the stride-1 output size ``H_in + pad_top + pad_bottom -
    dilation*(K-1)``, then the stride-1 transposed convolution. Without the fix: the strided
    transposed convolution, whose uneven kernel overlap leaves a grid pattern.
    """
    weight = conv.weight.to(signal.dtype)
    kernel = tuple(weight.shape[2:])
    dilation = tuple(conv.dilation)
    pads, full = [], []
    for axis in range(2):
        k, d = kernel[axis], dilation[axis]
        if conv.padding == "valid":
            top = bottom = 0
        elif conv.padding == "same":
            total = d * (k - 1)
            top, bottom = total // 2, total - total // 2
        else:
            top = bottom = conv.padding[axis]
        pads.append(top)
        full.append(in_size[axis] + top + bottom)  # padded input size
    ones = [full[a] - dilation[a] * (kernel[a] - 1) for a in range(2)]  # stride-1 output size
    stride = tuple(conv.stride)
    if stride_fix and stride != (1, 1):
        signal = upsample_nearest(signal, stride, ones)
        stride = (1, 1)
    out = F.conv_transpose2d(signal, weight, stride=stride, dilation=dilation, groups=conv.groups)
    # The strided transposed conv can fall short of the padded size where the forward pass
    # dropped a remainder (floor in the output size): those rows received nothing.
    short = [max(0, full[a] - out.shape[2 + a]) for a in range(2)]
    if short[0] or short[1]:
        out = F.pad(out, (0, short[1], 0, short[0]))
    return out[..., pads[0] : pads[0] + in_size[0], pads[1] : pads[1] + in_size[1]]


def upsample_nearest(signal: Tensor, stride: tuple, size: list[int]) -> Tensor:
    """Repeat each of the last two axes' entries ``stride`` times, to ``size`` entries (the
    last entry covers any remainder): the stride fix's upsampling."""
    for axis, s in enumerate(stride):
        rows = torch.arange(size[axis], device=signal.device) // s
        rows = rows.clamp_max(signal.shape[signal.dim() - 2 + axis] - 1)
        signal = signal.index_select(signal.dim() - 2 + axis, rows)
    return signal


def avg_pool_fix(
    gm: fx.GraphModule, node: fx.Node, replay: Replay, r: Tensor, execute: Any
) -> list | None:
    """The stride fix for a 2-D average pooling whose windows overlap unevenly (``k % s != 0``):
    upsample the signal to the stride-1 output size, then the transpose of the stride-1 pool.

    ``None`` where it does not apply (adaptive pools, ``mean``, ``k % s == 0``: every pixel is
    then covered by the same number of windows and the plain transpose leaves no grid).
    """
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if not isinstance(m, nn.AvgPool2d):
            return None
        k, s, p = m.kernel_size, m.stride, m.padding
        include, divisor = m.count_include_pad, m.divisor_override
    elif node.target is F.avg_pool2d:
        names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override")  # fmt: skip
        given = dict(zip(names, replay.args, strict=False)) | dict(replay.kwargs)
        k, s, p = (
            given["kernel_size"],
            given.get("stride") or given["kernel_size"],
            given.get("padding", 0),
        )
        include, divisor = given.get("count_include_pad", True), given.get("divisor_override")
    else:
        return None
    k, s, p = (_pair(v) for v in (k, s, p))
    if s == (1, 1) or all(ki % si == 0 for ki, si in zip(k, s, strict=True)):
        return None
    shape = replay.slots[0].shape
    ones = [shape[-2 + a] + 2 * p[a] - k[a] + 1 for a in range(2)]
    up = upsample_nearest(r, s, ones)
    with torch.enable_grad():
        leaf = torch.zeros(shape, dtype=replay.slots[0].dtype, device=r.device).requires_grad_()
        out = F.avg_pool2d(leaf, k, 1, p, False, include, divisor)
        (g,) = torch.autograd.grad(out, leaf, grad_outputs=up.to(out.dtype))
    return [(replay.sources[0], g)]


def _pair(v: Any) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


# ----------------------------------------------------------------------------- normalisations


def bn_scale(bn: nn.Module, channels: int, like: Tensor) -> Tensor:
    """``gamma / sqrt(running_var + eps)`` ``(C,)`` of an eval-mode BatchNorm (1 where unknown)."""
    var = getattr(bn, "running_var", None)
    scale = torch.ones(channels, dtype=like.dtype, device=like.device)
    if var is not None:
        scale = scale / torch.sqrt(var.to(like) + bn.eps)
    if getattr(bn, "weight", None) is not None:
        scale = scale * bn.weight.to(like)
    return scale


def _rstd(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    return torch.rsqrt(x.float().var(dim=dims, unbiased=False, keepdim=True) + eps).to(x.dtype)


def _channel(v: Tensor | None, x: Tensor, axis: int = 1) -> Tensor | float:
    """A per-channel vector ``(C,)`` shaped to broadcast along ``axis`` of ``x``."""
    if v is None:
        return 1.0
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.to(x.dtype).reshape(shape)


def _trailing(v: Tensor | None, x: Tensor) -> Tensor | float:
    return 1.0 if v is None else v.to(x.dtype)


def norm_scale(gm: fx.GraphModule, node: fx.Node, record: tuple) -> Tensor:
    """The recorded affine scale ``s`` of a normalisation, broadcastable to its input ``x``:
    ``out ≈ s * x + (terms of the statistics)``, read with the statistics frozen.

    BatchNorm (eval): ``gamma / sqrt(running_var + eps)`` per channel (the batch variance where
    the layer uses batch statistics); LayerNorm over the last dims (tokens, or channels-last
    maps, e.g. ConvNeXt and Swin with their permutes) and ``LayerNorm2d`` over the channels:
    ``gamma / sqrt(var + eps)`` per position; GroupNorm: ``gamma_c / sqrt(var_{b,g} + eps)``;
    InstanceNorm: per image and channel; RMSNorm: ``gamma / rms``; ``F.normalize``:
    ``1 / max(||x||_p, eps)``; LocalResponseNorm: the recorded ratio ``out / x``.
    """
    args, kwargs = record
    x = args[0] if args else kwargs["input"]
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return _module_norm_scale(gm, node, m, x)
    name = getattr(node.target, "__name__", "")
    given = _bind(name, args, kwargs)
    if name == "layer_norm":
        shape = given["normalized_shape"]
        k = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
        dims = tuple(range(x.dim() - k, x.dim()))
        return _rstd(x, dims, given.get("eps", 1e-5)) * _trailing(given.get("weight"), x)
    if name == "batch_norm":
        weight, eps = given.get("weight"), given.get("eps", 1e-5)
        var = given.get("running_var")
        if given.get("training") or var is None:
            return _rstd(x, _not(x, 1), eps) * _channel(weight, x)
        return torch.rsqrt(_channel(var, x) + eps) * _channel(weight, x)
    if name == "group_norm":
        groups, eps = int(given["num_groups"]), given.get("eps", 1e-5)
        grouped = x.reshape(x.shape[0], groups, -1)
        rstd = _rstd(grouped, (2,), eps)  # (B,G,1)
        per_channel = rstd.repeat_interleave(x.shape[1] // groups, dim=1)  # (B,C,1)
        return per_channel.reshape(*x.shape[:2], *[1] * (x.dim() - 2)) * _channel(
            given.get("weight"), x
        )
    if name == "rms_norm":
        shape = given["normalized_shape"]
        k = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
        dims = tuple(range(x.dim() - k, x.dim()))
        eps = given.get("eps") or torch.finfo(x.dtype).eps
        rms = torch.rsqrt(x.float().square().mean(dims, keepdim=True) + eps).to(x.dtype)
        return rms * _trailing(given.get("weight"), x)
    if name == "normalize":
        p, dim, eps = given.get("p", 2.0), given.get("dim", 1), given.get("eps", 1e-12)
        return 1.0 / x.norm(p=p, dim=dim, keepdim=True).clamp_min(eps)
    raise ValueError(
        f"deconvnet has no rule for the normalisation {describe(gm, node)}: it supports "
        "BatchNorm, LayerNorm (also over channels), GroupNorm, InstanceNorm, RMSNorm, "
        "F.normalize and LocalResponseNorm"
    )


_SIGNATURES = {
    "layer_norm": ("input", "normalized_shape", "weight", "bias", "eps"),
    "batch_norm": (
        "input",
        "running_mean",
        "running_var",
        "weight",
        "bias",
        "training",
        "momentum",
        "eps",
    ),
    "group_norm": ("input", "num_groups", "weight", "bias", "eps"),
    "rms_norm": ("input", "normalized_shape", "weight", "eps"),
    "normalize": ("input", "p", "dim", "eps"),
}


def _bind(name: str, args: tuple, kwargs: dict) -> dict:
    return dict(zip(_SIGNATURES.get(name, ()), args, strict=False)) | dict(kwargs)


def _not(x: Tensor, axis: int) -> tuple[int, ...]:
    return tuple(d for d in range(x.dim()) if d != axis)


def _module_norm_scale(gm: fx.GraphModule, node: fx.Node, m: nn.Module, x: Tensor) -> Tensor:
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if m.training or m.running_var is None:
            return _rstd(x, _not(x, 1), m.eps) * _channel(m.weight, x)
        return bn_scale(m, x.shape[1], x).reshape(1, -1, *[1] * (x.dim() - 2))
    if isinstance(m, nn.LayerNorm):
        if type(m).__name__ == "LayerNorm2d":  # a leaf LayerNorm2d normalises over channels
            return _rstd(x, (1,), m.eps) * _channel(m.weight, x)
        dims = tuple(range(x.dim() - len(m.normalized_shape), x.dim()))
        return _rstd(x, dims, m.eps) * _trailing(m.weight, x)
    if isinstance(m, nn.GroupNorm):
        return norm_scale(
            gm,
            SimpleNamespace(op="call_function", target=F.group_norm),
            ((x, m.num_groups, m.weight, m.bias, m.eps), {}),
        )
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        weight = m.weight if m.affine else None
        if m.track_running_stats and not m.training and m.running_var is not None:
            return torch.rsqrt(_channel(m.running_var, x) + m.eps) * _channel(weight, x)
        return _rstd(x, tuple(range(2, x.dim())), m.eps) * _channel(weight, x)
    if hasattr(nn, "RMSNorm") and isinstance(m, nn.RMSNorm):
        return norm_scale(
            gm,
            SimpleNamespace(op="call_function", target=F.rms_norm),
            ((x, m.normalized_shape, m.weight, m.eps), {}),
        )
    if isinstance(m, nn.LocalResponseNorm):
        out = m(x)
        return torch.where(x != 0, out / torch.where(x != 0, x, 1.0), m.k ** (-m.beta))
    raise ValueError(
        f"deconvnet has no rule for the normalisation {describe(gm, node)}: it supports "
        "BatchNorm, LayerNorm (also over channels), GroupNorm, InstanceNorm, RMSNorm, "
        "F.normalize and LocalResponseNorm"
    )


# ----------------------------------------------------------------------------- gates and sums


def gate_operands(
    gm: fx.GraphModule, node: fx.Node, signal: set, shapes: dict
) -> tuple[fx.Node, fx.Node, bool]:
    """``(signal factor, gate factor, divides)`` of a product (or quotient) of two signals.

    The signal branch is the factor with the output's full shape (a squeeze-excitation gate
    ``(B,C,1,1)`` or a spatial gate ``(B,1,h,w)`` broadcasts); where both have it, the factor
    that does not come from a sigmoid / hard sigmoid / tanh / softmax. A quotient ``x / y``
    scales its numerator by ``1 / y``. Raises where neither rule decides.
    """
    a, b = node.args[0], node.args[1]
    divides = (node.op == "call_method" and node.target in _DIVS) or (
        node.op == "call_function" and getattr(node.target, "__name__", "") in
        ("truediv", "itruediv", "div", "true_divide")
    )  # fmt: skip
    if divides and a in signal:
        return a, b, True
    if a is b:
        raise ValueError(
            f"deconvnet has no rule for {describe(gm, node)} (node {node.name!r}): the square "
            "of a signal is not a fixed scale of it (nor a gate)"
        )
    full = [n for n in (a, b) if shapes.get(n) == shapes.get(node)]
    if len(full) == 1:
        return full[0], (b if full[0] is a else a), False
    gates = [n for n in (a, b) if _gate_like(gm, n)]
    if len(gates) == 1:
        return (b if gates[0] is a else a), gates[0], False
    raise ValueError(
        f"deconvnet cannot tell the signal from the gate in {describe(gm, node)} (node "
        f"{node.name!r}): both factors have the output's shape and neither comes from a "
        "sigmoid, hard sigmoid, tanh or softmax"
    )


def _gate_like(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` is (a reshape or cast of) a sigmoid-like squashing of a signal."""
    for _ in range(8):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), _GATE_MODULES):
            return True
        if node.op == "call_function" and node.target in _GATE_FUNCTIONS:
            return True
        if node.op == "call_method" and node.target in _GATE_METHODS:
            return True
        if op_kind(gm, node) not in ("reshape", "identity") or not node.all_input_nodes:
            return False
        node = node.all_input_nodes[0]
    return False


def add_shares(a: Tensor, b: Tensor) -> Tensor:
    """The share of ``a`` in ``|a| + |b|`` (a half where both are 0), broadcast to the sum."""
    total = a.abs() + b.abs()
    return torch.where(total > 0, a.abs() / total.clamp_min(1e-30), 0.5)


def relu_rule(rule: str, r: Tensor, positive: Tensor | None) -> Tensor:
    """``guided``: ``r * [x_in > 0] * [r > 0]``; ``deconvnet``: ``relu(r)``."""
    if rule == "deconvnet":
        return torch.relu(r)
    return r * (positive & (r > 0))
