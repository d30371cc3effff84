"""Deconvnet / guided-backprop visualisation of one feature, with the stride fix (seed 001).

The signal starts at the feature's layer, zero except the chosen channel, which gets its own
activation map, and walks the recorded forward pass backwards to the input pixels. The rules:

- ReLU (ReLU6 and LeakyReLU are treated as ReLU): ``relu="guided"`` (default, guided
  backpropagation): ``R_in = R_out * [x_in > 0] * [R_out > 0]``; ``relu="deconvnet"``:
  ``R_in = relu(R_out)``. With ``stride_fix=False`` and no residual additions the result is
  exactly guided backpropagation (resp. the deconvnet) of ``½‖A_c‖²``, which a test checks.
- Conv2d with stride 1: the transposed convolution with the forward weights (no bias).
- Conv2d with stride s > 1 and ``stride_fix=True`` (the fix of seed 001): nearest-neighbour
  upsample the signal to the size the layer would output with stride 1,
  ``H_in + pad_top + pad_bottom - dilation*(K-1)``, then the stride-1 transposed convolution.
  ``stride_fix=False``: the strided transposed convolution, whose uneven kernel overlap leaves
  a grid (checkerboard) pattern at the stride frequency.
- BatchNorm2d: ``bn="scale"`` (default) multiplies by ``gamma / sqrt(running_var + eps)``, the
  linear part of the eval-mode layer, as guided backprop does; ``bn="identity"`` passes through.
- Residual addition ``a + b`` of two signals: split between the summands in proportion to
  their contributions, ``|a| / (|a| + |b|)`` and ``|b| / (|a| + |b|)`` (halves where both are
  0), so the signal is conserved rather than doubled; adding a constant passes all of it on.
- Max pooling: by its switches, to the argmax of each window (overlapping windows add up).
- Average/adaptive pooling, concatenation, slicing, reshaping, dropout, padding, resizing,
  multiplication by a constant: their transpose (the vector-Jacobian product of the linear op).

Anything else on the way (a Linear layer, a product of two signals, GroupNorm, ...) is an error
that names the op. The graph comes from ``torch.fx`` tracing and is run node by node, recording
what each rule needs (ReLU masks, pooling inputs, the summands) before any in-place op runs, so
no hook is ever put on the model. Padding modes other than zeros are treated as zero padding.
The heatmap is the L2 norm over RGB of the positive part of the signal at the input, min-max
normalised per image.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..inputs import check_images, model_device
from ..maps import minmax
from ..tap import preserved, resolve_layer
from .graph import describe, trace

RELU_RULES = ("guided", "deconvnet")
BN_RULES = ("scale", "identity")


def _existing(owner: object, *names: str) -> set:
    return {getattr(owner, n) for n in names if hasattr(owner, n)}


_RELU_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)
_RELU_FUNCTIONS = _existing(F, "relu", "relu_", "relu6", "leaky_relu") | _existing(
    torch, "relu", "relu_"
)
_RELU_METHODS = {"relu", "relu_"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_SCALE_FUNCTIONS = {operator.mul, operator.imul, operator.truediv, torch.mul, torch.div}
_SCALE_METHODS = {"mul", "mul_", "div", "div_"}
_LINEAR_MODULES = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Upsample,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.PixelShuffle,
    nn.ChannelShuffle,
)
_LINEAR_FUNCTIONS = (
    _existing(
        F,
        "max_pool2d",
        "avg_pool2d",
        "adaptive_avg_pool2d",
        "adaptive_max_pool2d",
        "interpolate",
        "pad",
        "dropout",
        "dropout2d",
        "pixel_shuffle",
    )
    | _existing(
        torch,
        "max_pool2d",
        "avg_pool2d",
        "flatten",
        "cat",
        "concat",
        "concatenate",
        "reshape",
        "squeeze",
        "unsqueeze",
        "transpose",
        "permute",
        "neg",
        "sub",
    )
    | {operator.getitem, operator.sub, operator.neg}
)
_LINEAR_METHODS = {
    "view",
    "reshape",
    "flatten",
    "contiguous",
    "permute",
    "transpose",
    "squeeze",
    "unsqueeze",
    "expand",
    "repeat",
    "clone",
    "mean",
    "sum",
    "neg",
    "sub",
    "sub_",
}


@dataclass
class _Linear:
    """What a linear op needs to be replayed for its transpose: its arguments as at call time."""

    args: Any
    kwargs: Any
    slots: list[tuple[fx.Node, Tensor]]


@dataclass
class _Split:
    """A residual addition ``a + b``: the share of ``a`` in ``|a| + |b|``, and the two shapes."""

    share: Tensor
    shape_a: torch.Size
    shape_b: torch.Size


class _Slot:
    """Marks where a recorded signal tensor goes back into a linear op's arguments."""

    def __init__(self, index: int) -> None:
        self.index = index


def _kind(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """How the backward pass treats ``node``: input, conv, bn, relu, add, scale, linear, other."""
    if node.op == "placeholder":
        return "input"
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.Conv2d):
            return "conv"
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return "bn"
        if isinstance(m, _RELU_MODULES):
            return "relu"
        if isinstance(m, _LINEAR_MODULES):
            return "linear"
        return "other"
    if node.op == "call_function":
        if node.target in _RELU_FUNCTIONS:
            return "relu"
        if node.target in _ADD_FUNCTIONS:
            return "add"
        if node.target in _SCALE_FUNCTIONS:
            return "scale"
        return "linear" if node.target in _LINEAR_FUNCTIONS else "other"
    if node.op == "call_method":
        if node.target in _RELU_METHODS:
            return "relu"
        if node.target in _ADD_METHODS:
            return "add"
        if node.target in _SCALE_METHODS:
            return "scale"
        return "linear" if node.target in _LINEAR_METHODS else "other"
    return "other"


def start_node(graph: fx.Graph, layer: str) -> fx.Node:
    """The node whose value is the output of module ``layer`` (run exactly once)."""
    nodes = list(graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target == layer]
    inside = [n for n in nodes if layer in (n.meta.get("nn_module_stack") or {})]
    again = any(
        key.startswith(layer + "@") for n in nodes for key in (n.meta.get("nn_module_stack") or {})
    )
    if len(calls) > 1 or again:
        raise ValueError(
            f"layer {layer!r} runs more than once in the forward pass (a shared module), so its "
            "output is ambiguous; pick a module that runs once, e.g. the enclosing block"
        )
    if calls:
        return calls[0]
    if not inside:
        raise ValueError(f"layer {layer!r} does not run in the model's traced forward pass")
    return inside[-1]


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


def conv_transpose(
    signal: Tensor, conv: nn.Conv2d, in_size: tuple[int, int], stride_fix: bool = True
) -> Tensor:
    """Send ``signal`` ``(B,C_out,h,w)`` back through ``conv`` to ``(B,C_in,H_in,W_in)``.

    Stride 1: the transposed convolution with the forward weights (the bias is ignored).
    Stride s > 1 with ``stride_fix``: nearest-neighbour upsample (output ``o`` covers stride-1
    positions ``o*s .. o*s+s-1``) to the stride-1 output size ``H_in + pad_top + pad_bottom -
    dilation*(K-1)``, then the stride-1 transposed convolution. Without the fix: the strided
    transposed convolution, whose uneven kernel overlap leaves a grid pattern.
    """
    weight = conv.weight.to(signal.dtype)
    pads, full = [], []
    for axis in range(2):
        k, d = conv.kernel_size[axis], conv.dilation[axis]
        if conv.padding == "valid":
            top = bottom = 0
        elif conv.padding == "same":
            total = d * (k - 1)
            top, bottom = total // 2, total - total // 2
        else:
            top = bottom = conv.padding[axis]
        pads.append(top)
        full.append(in_size[axis] + top + bottom)  # padded input size
    ones = [full[a] - conv.dilation[a] * (conv.kernel_size[a] - 1) for a in range(2)]  # stride 1
    stride = tuple(conv.stride)
    if stride_fix and stride != (1, 1):
        for axis, s in enumerate(stride):
            rows = torch.arange(ones[axis], device=signal.device) // s
            rows = rows.clamp_max(signal.shape[2 + axis] - 1)
            signal = signal.index_select(2 + axis, rows)
        stride = (1, 1)
    out = F.conv_transpose2d(
        signal, weight, stride=stride, dilation=conv.dilation, groups=conv.groups
    )
    # The strided transposed conv can fall short of the padded size where the forward pass
    # dropped a remainder (floor in the output size): those rows received nothing.
    short = [max(0, full[a] - out.shape[2 + a]) for a in range(2)]
    if short[0] or short[1]:
        out = F.pad(out, (0, short[1], 0, short[0]))
    return out[..., pads[0] : pads[0] + in_size[0], pads[1] : pads[1] + in_size[1]]


def bn_scale(bn: nn.Module, channels: int, like: Tensor) -> Tensor:
    """``gamma / sqrt(running_var + eps)`` ``(C,)`` of an eval-mode BatchNorm (1 where unknown)."""
    var = getattr(bn, "running_var", None)
    scale = torch.ones(channels, dtype=like.dtype, device=like.device)
    if var is not None:
        scale = scale / torch.sqrt(var.to(like) + bn.eps)
    if getattr(bn, "weight", None) is not None:
        scale = scale * bn.weight.to(like)
    return scale


class Deconvnet:
    """A traced model that visualises features of any of its layers (see the module docstring).

    ``Deconvnet(model).signal(images, layer, channels)`` gives the signal at the input pixels
    ``(B,3,H,W)``; ``.heatmap(...)`` the normalised map ``(B,H,W)``. Tracing happens once, at
    construction; the model itself is never modified (each run holds :func:`preserved`).
    """

    def __init__(
        self,
        model: nn.Module,
        stride_fix: bool = True,
        relu: str = "guided",
        bn: str = "scale",
    ) -> None:
        if relu not in RELU_RULES:
            raise ValueError(f"relu must be one of {RELU_RULES}, got {relu!r}")
        if bn not in BN_RULES:
            raise ValueError(f"bn must be one of {BN_RULES}, got {bn!r}")
        self.model = model
        self.stride_fix = bool(stride_fix)
        self.relu = relu
        self.bn = bn
        with preserved(model):
            self.graph_module = trace(model, "deconvnet")
        self.modules = dict(self.graph_module.named_modules())

    def heatmap(self, images: Tensor, layer: str, channels: int | Sequence[int] | Tensor) -> Tensor:
        """``(B,H,W)`` float32 in [0,1]: ``minmax(||relu(signal)||_RGB)`` of :meth:`signal`.

        The signal is rescaled (``rescale=True``) so that tiny activations of untrained or
        badly scaled networks do not fall under ``minmax``'s constant-map threshold.
        """
        norm = torch.relu(self.signal(images, layer, channels, rescale=True).float()).norm(dim=1)
        return minmax(norm / _peak(norm))

    def signal(
        self,
        images: Tensor,
        layer: str,
        channels: int | Sequence[int] | Tensor,
        rescale: bool = False,
    ) -> Tensor:
        """Signal of channel ``channels[b]`` of ``layer`` sent back to the pixels of image ``b``.

        ``images`` ``(B,C,H,W)``; ``channels`` one int for every image or ``B`` ints.
        Returns ``(B,C,H,W)`` in the images' dtype. Every rule is positively homogeneous, so
        ``rescale=True`` (start map divided by its maximum per image) changes only the scale.
        """
        start = start_node(self.graph_module.graph, layer)
        needed = _ancestors(start)
        order = [n for n in self.graph_module.graph.nodes if n in needed]
        with preserved(self.model), torch.no_grad():
            env, records = self._forward(images, order)
            activation = env[start]
            if not isinstance(activation, Tensor) or activation.dim() != 4:
                found = tuple(activation.shape) if isinstance(activation, Tensor) else activation
                raise ValueError(f"layer {layer!r} must output a (B,K,h,w) tensor, got {found}")
            picked = _channel_mask(channels, activation)
            self._check_supported(order, env)
            del env
            signal = activation * picked
            if rescale:
                signal = signal / _peak(signal.abs())
            return self._backward(order, records, start, signal)

    def _forward(self, images: Tensor, order: list[fx.Node]) -> tuple[dict, dict]:
        """Run ``order``; record what each backward rule needs (before any in-place op runs)."""
        env: dict[fx.Node, Any] = {}
        records: dict[fx.Node, Any] = {}
        placeholders = 0
        for node in order:
            if node.op == "placeholder":
                env[node] = images if placeholders == 0 else (node.args[0] if node.args else None)
                placeholders += 1
                continue
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            records[node] = self._record(node, args, kwargs, env)
            env[node] = self._execute(node, args, kwargs)
        return env, records

    def _execute(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            value: Any = self.graph_module
            for part in str(node.target).split("."):
                value = getattr(value, part)
            return value
        raise ValueError(f"deconvnet cannot run graph node {node.op} {node.name!r}")

    def _record(self, node: fx.Node, args: Any, kwargs: Any, env: dict) -> Any:
        kind = _kind(node, self.modules)
        if kind == "conv":
            return tuple(args[0].shape[-2:])
        if kind == "relu":
            return args[0] > 0
        if kind == "add":
            return self._record_add(node, env)
        if kind in ("linear", "scale"):
            return self._record_linear(node, env, scale=kind == "scale")
        return None

    def _signal_inputs(self, node: fx.Node, env: dict) -> list[fx.Node]:
        """The arguments of ``node`` that carry signal: tensors computed from the input image."""
        return [
            n
            for n in node.all_input_nodes
            if isinstance(env.get(n), Tensor) and n.op not in ("get_attr",) and _carries(n)
        ]

    def _record_add(self, node: fx.Node, env: dict) -> Any:
        inputs = self._signal_inputs(node, env)
        if len(inputs) < 2 or len(node.args) < 2 or node.args[0] is node.args[1]:
            return self._record_linear(node, env, scale=False)
        a, b = env[node.args[0]], env[node.args[1]]
        total = a.abs() + b.abs()
        share = torch.where(total > 0, a.abs() / total.clamp_min(1e-30), 0.5)
        return _Split(share, a.shape, b.shape)

    def _record_linear(self, node: fx.Node, env: dict, scale: bool) -> _Linear:
        slots: list[tuple[fx.Node, Tensor]] = []

        def keep(n: fx.Node) -> Any:
            value = env[n]
            if not _carries(n) or n.op == "get_attr":
                return value
            if isinstance(value, (tuple, list)) and any(isinstance(v, Tensor) for v in value):
                raise ValueError(
                    f"deconvnet cannot pass the signal back through {n.name!r}, which returns "
                    f"several tensors ({describe(self.graph_module, n)})"
                )
            if not isinstance(value, Tensor):
                return value
            slots.append((n, value.detach().clone()))
            return _Slot(len(slots) - 1)

        args = fx.node.map_arg(node.args, keep)
        kwargs = fx.node.map_arg(node.kwargs, keep)
        if scale and len(slots) > 1:
            raise ValueError(
                f"deconvnet cannot pass the signal back through "
                f"{describe(self.graph_module, node)} (node {node.name!r}): it multiplies or "
                "divides two signals (gating/attention)"
            )
        return _Linear(args, kwargs, slots)

    def _check_supported(self, order: list[fx.Node], env: dict) -> None:
        for node in order:
            if _kind(node, self.modules) == "other" and isinstance(env.get(node), Tensor):
                if node.op == "get_attr" or not _carries(node):
                    continue
                raise ValueError(
                    "deconvnet cannot pass the signal back through "
                    f"{describe(self.graph_module, node)} (node {node.name!r}); it supports "
                    "Conv2d, BatchNorm2d, ReLU/ReLU6/LeakyReLU, max/avg pooling, residual "
                    "additions, concatenation, slicing, reshaping, dropout, padding and resizing"
                )

    def _backward(
        self, order: list[fx.Node], records: dict, start: fx.Node, signal: Tensor
    ) -> Tensor:
        """Walk ``order`` backwards from ``start``; return the signal at the first input."""
        pending: dict[fx.Node, Tensor] = {start: signal}
        first_input = next(n for n in order if n.op == "placeholder")
        for node in reversed(order):
            if node is first_input or node not in pending:
                continue
            incoming = pending.pop(node)
            for source, part in self._step(node, records.get(node), incoming):
                pending[source] = pending[source] + part if source in pending else part
        if first_input not in pending:
            raise ValueError("no signal reached the input image from this layer")
        return pending[first_input]

    def _step(self, node: fx.Node, record: Any, r: Tensor) -> list[tuple[fx.Node, Tensor]]:
        """One backward rule: the signal ``r`` at ``node``'s output → ``[(input node, signal)]``."""
        kind = _kind(node, self.modules)
        if kind == "conv":
            conv = self.modules[node.target]
            return [(node.args[0], conv_transpose(r, conv, record, self.stride_fix))]
        if kind == "bn":
            if self.bn == "identity":
                return [(node.args[0], r)]
            scale = bn_scale(self.modules[node.target], r.shape[1], r)
            return [(node.args[0], r * scale[None, :, None, None])]
        if kind == "relu":
            if self.relu == "deconvnet":
                return [(node.args[0], torch.relu(r))]
            return [(node.args[0], r * (record & (r > 0)))]
        if isinstance(record, _Split):
            a, b = record.share, 1 - record.share
            return [
                (node.args[0], (r * a).sum_to_size(record.shape_a)),
                (node.args[1], (r * b).sum_to_size(record.shape_b)),
            ]
        if isinstance(record, _Linear):
            return _transpose(node, record, r, self._execute)
        raise ValueError(
            f"deconvnet cannot pass the signal back through {describe(self.graph_module, node)}"
        )


def _carries(node: fx.Node) -> bool:
    """Whether ``node`` is computed from a graph input (False for constants and parameters)."""
    cached = node.meta.get("_fw_carries")
    if cached is None:
        if node.op == "placeholder":
            cached = True
        elif node.op == "get_attr":
            cached = False
        else:
            cached = any(_carries(n) for n in node.all_input_nodes)
        node.meta["_fw_carries"] = cached
    return cached


def _transpose(
    node: fx.Node, record: _Linear, r: Tensor, execute: Any
) -> list[tuple[fx.Node, Tensor]]:
    """The transpose of a linear op: its vector-Jacobian product at the recorded inputs."""
    if not record.slots:
        return []
    with torch.enable_grad():
        leaves = [value.detach().requires_grad_(True) for _, value in record.slots]
        copies = [leaf.clone() for leaf in leaves]  # in-place ops must not touch the leaves

        def fill(a: Any) -> Any:
            return copies[a.index] if isinstance(a, _Slot) else a

        args = fx.node.map_aggregate(record.args, fill)
        kwargs = fx.node.map_aggregate(record.kwargs, fill)
        out = execute(node, args, kwargs)
        grads = torch.autograd.grad(out, leaves, grad_outputs=r.to(out.dtype), allow_unused=True)
    return [(n, g) for (n, _), g in zip(record.slots, grads, strict=True) if g is not None]


def _peak(x: Tensor) -> Tensor:
    """Per-image maximum of ``x`` ``(B,...)`` as ``(B,1,...)`` (1 where it is 0)."""
    peak = x.flatten(1).amax(dim=1)
    peak = torch.where(peak > 0, peak, torch.ones_like(peak))
    return peak.view(-1, *([1] * (x.dim() - 1)))


def _channel_mask(channels: int | Sequence[int] | Tensor, activation: Tensor) -> Tensor:
    """``(B,K,1,1)`` one-hot of each image's channel; a clear error when out of range."""
    b, k = activation.shape[:2]
    chosen = torch.as_tensor(channels, dtype=torch.long).flatten().to(activation.device)
    if chosen.numel() == 1:
        chosen = chosen.expand(b)
    if chosen.numel() != b:
        raise ValueError(f"channel must be one int or one per image ({b}), got {chosen.numel()}")
    if bool((chosen < 0).any()) or bool((chosen >= k).any()):
        raise ValueError(f"channel must be in [0, {k}) for this layer, got {chosen.tolist()}")
    return F.one_hot(chosen, k).to(activation.dtype)[:, :, None, None]


def deconvnet(
    model: nn.Module,
    images: Tensor,
    layer: str | nn.Module,
    channel: int | Sequence[int] | Tensor,
    stride_fix: bool = True,
    relu: str = "guided",
    bn: str = "scale",
) -> Tensor:
    """Visualise channel ``channel`` of ``layer`` on ``images``: ``(B,H,W)`` float32 in [0,1].

    Args:
        model: any ``nn.Module`` that ``torch.fx`` can trace (Sequential CNNs, VGG, ResNet, ...).
        images: ``(B,3,H,W)`` or ``(3,H,W)`` float tensor, preprocessed for the model.
        layer: a module name from ``model.named_modules()`` (or the module) that runs once.
        channel: the channel to visualise, one int or one per image.
        stride_fix: upsample before strided transposed convolutions (no grid artefacts).
        relu: "guided" (default) or "deconvnet" (see the module docstring).
        bn: "scale" (default, BatchNorm's gamma / sqrt(var + eps)) or "identity".

    The model comes back exactly as it went in (modes, flags, grads; no hooks are used).
    """
    images = check_images(images).to(model_device(model))
    name, _ = resolve_layer(model, layer)
    return Deconvnet(model, stride_fix=stride_fix, relu=relu, bn=bn).heatmap(images, name, channel)
