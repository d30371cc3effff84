"""Deconvnet / guided-backprop visualisation of one feature, with the stride fix (seed 001).

The signal starts at the feature's layer, zero except the chosen channel, which gets its own
activation map, and walks the recorded forward pass (:func:`graph.record_forward`) backwards to
the input pixels. Each node's rule comes from its op kind (:func:`graph.op_kind`); the rules
(:mod:`famwidget.explainers.deconv_rules`):

- ``activation`` (ReLU, ReLU6, LeakyReLU, GELU, SiLU, Hardswish, Mish, ELU, ...):
  ``relu="guided"`` (default, guided backpropagation): ``R_in = R_out * [x_in > 0] * [R_out > 0]``;
  ``relu="deconvnet"``: ``R_in = relu(R_out)``. With ``stride_fix=False``, no residual addition
  and the statistics of the normalisations frozen, the result is exactly autograd's guided
  backpropagation (resp. the deconvnet) of ``½‖A_c‖²``, which the tests check on plain CNNs,
  MobileNetV3, EfficientNet and ConvNeXt.
- ``conv``, any groups (depthwise), dilation and stride: the transposed convolution with the
  forward weights (no bias). Stride s > 1 and ``stride_fix=True`` (the fix of seed 001, also in
  patch embeddings and strided depthwise convs): nearest-neighbour upsample the signal to the size
  the layer would output with stride 1, ``H_in + pad_top + pad_bottom - dilation*(K-1)``, then the
  stride-1 transposed convolution. ``stride_fix=False``: the strided transposed convolution, whose
  uneven kernel overlap leaves a grid (checkerboard) pattern at the stride frequency.
- ``norm``: ``bn="scale"`` (default) multiplies by the layer's recorded affine scale, its linear
  part with the statistics frozen: BatchNorm ``gamma / sqrt(running_var + eps)`` per channel,
  LayerNorm over tokens or over channels (channels-last, between permutes; ``LayerNorm2d``)
  ``gamma / sqrt(var + eps)`` per position, GroupNorm ``gamma_c / sqrt(var_{b,g} + eps)``,
  InstanceNorm, RMSNorm, ``F.normalize``; ``bn="identity"`` passes the signal through.
- ``gate`` (a product of two signals, e.g. squeeze-excitation ``x * sigmoid(fc(pool(x)))``): the
  signal branch gets ``R * gate`` (the recorded gate value), the gate branch nothing; ``x / y``
  of two signals: the numerator gets ``R / y``.
- ``add``: split between the summands in proportion to their contributions, ``|a| / (|a| + |b|)``
  and ``|b| / (|a| + |b|)`` (halves where both are 0), so the signal is conserved rather than
  doubled; the subtrahend of ``a - b`` gets its share negated; a constant summand gets nothing.
- ``pool_max``: by its switches, to the argmax of each window (overlapping windows add up).
- ``pool_avg``: its transpose; with ``stride_fix`` a 2-D average pool whose windows overlap
  unevenly (``k % s != 0``) is upsampled first, as for convolutions.
- ``reshape``, ``split``, ``cat``, ``resize``, ``linear``, ``conv_transpose``, ``scale``: their
  exact transpose (the vector-Jacobian product of the linear op): the inverse index mapping of
  every view, permute, transpose, flatten, chunk, split, cat and channel shuffle, the adjoint of
  the upsampling, ``W^T`` of a linear layer.
- ``identity`` (dropout, casts, clones): passed through.
- ``attention`` and ``other``: no rule. The error names the op, its module, and the layers before
  it that can be explained instead (e.g. the patch embedding of a ViT).

The heatmap is the L2 norm over RGB of the positive part of the signal at the input, min-max
normalised per image. No hook is ever put on the model; it comes back exactly as it went in.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..explanation import DegenerateMapWarning
from ..inputs import check_images, model_device
from ..maps import minmax
from ..tap import preserved, resolve_layer
from . import deconv_rules as rules
from .deconv_layout import channel_axis, layouts
from .deconv_rules import BN_RULES, RELU_RULES, bn_scale, conv_transpose
from .graph import (
    _execute,
    ancestors,
    describe,
    op_kind,
    record_forward,
    signal_nodes,
    trace,
    unwrap,
)

__all__ = [
    "BN_RULES",
    "RELU_RULES",
    "Deconvnet",
    "bn_scale",
    "conv_transpose",
    "deconvnet",
    "start_node",
]

_SUBTRACT = {"sub", "isub", "subtract", "sub_", "__sub__"}
_RSUBTRACT = {"rsub", "__rsub__"}


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


def _outputs_of_modules(graph: fx.Graph) -> dict[fx.Node, str]:
    """The node that gives each module's output (its last node), by node."""
    last: dict[str, fx.Node] = {}
    for n in graph.nodes:
        if n.op == "call_module":
            last[str(n.target)] = n
        for key in n.meta.get("nn_module_stack") or {}:
            if key and "@" not in key:
                last[key] = n
    return {n: name for name, n in last.items()}


class Deconvnet:
    """A traced model that visualises features of any of its layers (see the module docstring).

    ``Deconvnet(model).signal(images, layer, channels)`` gives the signal at the input pixels
    ``(B,3,H,W)``; ``.heatmap(...)`` the normalised map ``(B,H,W)``; ``.explainable(images,
    layers)`` which layers it can pass back from. Tracing happens once, at construction; the
    model itself is never modified (each run holds :func:`preserved`).
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
        self.signal_set = signal_nodes(self.graph_module)
        self._prefix = _wrapper_prefixes(model)

    # ---- public ---------------------------------------------------------------------------

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
        gm = self.graph_module
        start = start_node(gm.graph, self._name(layer))
        with preserved(self.model), torch.no_grad():
            rec = record_forward(gm, images, keep=self._wanted, stop=start)
            activation = rec.output
            if not isinstance(activation, Tensor) or activation.dim() != 4:
                found = tuple(activation.shape) if isinstance(activation, Tensor) else activation
                raise ValueError(f"layer {layer!r} must output a (B,K,h,w) tensor, got {found}")
            rec.shapes[start] = activation.shape
            order = [n for n in gm.graph.nodes if n in rec.shapes or n in rec.records]
            needed = ancestors(start)
            order = [n for n in order if n in needed]
            reasons = self._reasons(order, rec.shapes)
            if reasons[start] is not None:
                raise ValueError(self._explain_block(reasons[start], order, reasons, rec.shapes))
            axis = channel_axis(layouts(gm, order, rec.shapes, self.signal_set).get(start))
            if axis is None:
                raise ValueError(
                    f"deconvnet cannot tell which axis of layer {layer!r}'s output "
                    f"{tuple(activation.shape)} holds the channels (it follows the graph from "
                    "the images: convolutions give (B,C,h,w), permutes move the axes); explain "
                    "a layer with a (B,C,h,w) or channels-last (B,h,w,C) output"
                )
            picked = _channel_mask(channels, activation.movedim(axis, 1)).movedim(1, axis)
            signal = activation * picked
            if rescale:
                signal = signal / _peak(signal.abs())
            del activation
            return self._backward(order, rec, start, signal)

    def explainable(
        self, images: Tensor, layers: Sequence[str], channels_last: bool = True
    ) -> dict[str, str | None]:
        """For each of ``layers``: ``None`` if the deconvnet can pass the signal back from it to
        the pixels, else the reason (the op that has no rule, an output without a channel axis,
        or a channels-last output where ``channels_last=False``). One forward pass of
        ``images`` ``(B,C,H,W)``."""
        gm = self.graph_module
        starts = {name: start_node(gm.graph, self._name(name)) for name in layers}
        position = {n: i for i, n in enumerate(gm.graph.nodes)}
        last = max(starts.values(), key=position.__getitem__, default=None)
        if last is None:
            return {}
        with preserved(self.model), torch.no_grad():
            rec = record_forward(gm, images, keep=(), stop=last)  # runs only what is needed
        if isinstance(rec.output, Tensor):
            rec.shapes[last] = rec.output.shape
        order = [n for n in gm.graph.nodes if position[n] <= position[last]]
        reasons = self._reasons(order, rec.shapes)
        axes = layouts(gm, order, rec.shapes, self.signal_set)
        found = {}
        for name, node in starts.items():
            found[name] = reasons.get(node)
            axis = channel_axis(axes.get(node))
            shape = tuple(rec.shapes.get(node, ()))
            if found[name] is None and axis is None:
                found[name] = f"its output {shape} has no channel axis deconvnet can read"
            elif found[name] is None and axis != 1 and not channels_last:
                found[name] = f"its output {shape} is channels-last (B,h,w,C)"
        return found

    # ---- planning -------------------------------------------------------------------------

    def _name(self, layer: str) -> str:
        for prefix in self._prefix:
            if layer.startswith(prefix):
                return layer[len(prefix) :]
        return layer

    def _wanted(self, node: fx.Node) -> bool:
        return node in self.signal_set and op_kind(self.graph_module, node) != "shape"

    def _sources(self, node: fx.Node, shapes: dict) -> list[fx.Node]:
        """The inputs of ``node`` that receive signal; raises where ``node`` has no rule."""
        gm = self.graph_module
        kind = op_kind(gm, node)
        if kind == "attention":
            raise ValueError(
                f"deconvnet has no rule for the attention {describe(gm, node)} (node "
                f"{node.name!r}): its weights are computed from the image, so no fixed "
                "transpose sends the signal back through it"
            )
        if kind not in rules.PASSABLE:
            raise ValueError(
                f"deconvnet cannot pass the signal back through {describe(gm, node)} (node "
                f"{node.name!r}); it has rules for convolutions, linear layers, activations, "
                "normalisations, pooling, reshapes, split/cat, additions, gates, scaling and "
                "resizing"
            )
        if kind == "gate":
            return [rules.gate_operands(gm, node, self.signal_set, shapes)[0]]
        found = list(dict.fromkeys(n for n in node.all_input_nodes if n in self.signal_set))
        if kind == "scale" and node.op != "call_module":
            operands = [a for a in node.args if isinstance(a, fx.Node) and a in self.signal_set]
            divisor = len(node.args) > 1 and node.args[1] in self.signal_set
            name = node.target if node.op == "call_method" else node.target.__name__
            if len(operands) > 1 or (divisor and "div" in str(name)):
                raise ValueError(
                    f"deconvnet has no rule for {describe(gm, node)} (node {node.name!r}): it "
                    "squares a signal or divides by one, which is not a fixed scale"
                )
        if kind in ("conv", "linear", "norm", "activation") and len(found) > 1:
            raise ValueError(
                f"deconvnet cannot pass the signal back through {describe(gm, node)} (node "
                f"{node.name!r}): its weights depend on the image"
            )
        return found

    def _reasons(self, order: list[fx.Node], shapes: dict) -> dict[fx.Node, str | None]:
        """For each node of ``order`` (topological): why no signal can reach the pixels from
        it (the first op on the way without a rule), or ``None``."""
        reasons: dict[fx.Node, str | None] = {}
        for node in order:
            if node not in self.signal_set or node.op == "placeholder":
                reasons[node] = None
                continue
            try:
                sources = self._sources(node, shapes)
            except ValueError as error:
                reasons[node] = str(error)
                continue
            reasons[node] = next((reasons[s] for s in sources if reasons.get(s)), None)
        return reasons

    def _explain_block(self, reason: str, order: list, reasons: dict, shapes: dict) -> str:
        """The error: the reason, and the latest layers before it that can be explained."""
        names = _outputs_of_modules(self.graph_module.graph)
        axes = layouts(self.graph_module, order, shapes, self.signal_set)
        fine = [
            names[n]
            for n in order
            if n in names and reasons.get(n) is None and channel_axis(axes.get(n)) is not None
        ]
        fine = list(dict.fromkeys(fine))[-3:]
        instead = (
            f"layers it can explain on the way: {', '.join(map(repr, fine))}"
            if fine
            else "no layer on the way can be explained"
        )
        return f"{reason}. Pick a layer before it; {instead}"

    # ---- backward -------------------------------------------------------------------------

    def _backward(self, order: list[fx.Node], rec: Any, start: fx.Node, signal: Tensor) -> Tensor:
        """Walk ``order`` backwards from ``start``; return the signal at the first input."""
        pending: dict[fx.Node, Any] = {start: signal}
        first_input = next(n for n in order if n.op == "placeholder")
        for node in reversed(order):
            if node is first_input or node not in pending:
                continue
            incoming = pending.pop(node)
            for source, part in self._step(node, rec, incoming):
                if isinstance(part, tuple):  # (index, signal) for an op with several outputs
                    index, value = part
                    slots = pending.setdefault(source, {})
                    slots[index] = slots[index] + value if index in slots else value
                else:
                    pending[source] = pending[source] + part if source in pending else part
        if first_input not in pending:
            raise ValueError("no signal reached the input image from this layer")
        return pending[first_input].to(signal.dtype)

    def _step(self, node: fx.Node, rec: Any, r: Any) -> list[tuple[fx.Node, Any]]:
        """One backward rule: the signal ``r`` at ``node``'s output → ``[(input node, signal)]``."""
        gm = self.graph_module
        kind = op_kind(gm, node)
        record = rec.records[node]
        x = _first_signal(node, record, self.signal_set)
        if (
            node.op == "call_function"
            and node.target is operator.getitem
            and isinstance(record[0][0], (tuple, list))
        ):
            return [(node.args[0], (record[0][1], r))]
        if kind == "identity":
            return [(x[0], r.to(x[1].dtype))]
        if kind == "conv" and x[1].dim() == 4:
            spec = rules.conv_spec(gm, node, record)
            return [(x[0], conv_transpose(r, spec, tuple(x[1].shape[-2:]), self.stride_fix))]
        if kind == "activation":
            return [(x[0], rules.relu_rule(self.relu, r, x[1] > 0))]
        if kind == "norm":
            if self.bn == "identity":
                return [(x[0], r)]
            scale = rules.norm_scale(gm, node, record)
            return [(x[0], (r * scale).sum_to_size(x[1].shape))]
        if kind == "add":
            return self._add(node, record, r)
        if kind == "gate":
            sig, gate, divides = rules.gate_operands(gm, node, self.signal_set, rec.shapes)
            g = _value_of(node, record, gate)
            part = r / g if divides else r * g
            return [(sig, part.sum_to_size(_value_of(node, record, sig).shape))]
        replay = rules.replay_record(node, record, self.signal_set, keep_values=kind == "pool_max")
        if kind == "pool_avg" and self.stride_fix and x[1].dim() == 4:
            fixed = rules.avg_pool_fix(gm, node, replay, r, self._execute)
            if fixed is not None:
                return fixed
        return rules.transpose(self._execute, node, replay, r)

    def _add(self, node: fx.Node, record: tuple, r: Tensor) -> list[tuple[fx.Node, Tensor]]:
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        signs = (-1.0, 1.0) if name in _RSUBTRACT else (1.0, -1.0) if name in _SUBTRACT else (1, 1)
        a, b = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        va, vb = record[0][0], record[0][1] if len(record[0]) > 1 else record[1].get("other")
        carrying = [n in self.signal_set for n in (a, b)]
        if all(carrying) and a is not b:
            share = rules.add_shares(va, vb * signs[1])
            return [
                (a, (signs[0] * r * share).sum_to_size(va.shape)),
                (b, (signs[1] * r * (1 - share)).sum_to_size(vb.shape)),
            ]
        if all(carrying):  # x + x
            return [(a, (r * signs[0] * 0.5 + r * signs[1] * 0.5).sum_to_size(va.shape))]
        which, value, sign = (a, va, signs[0]) if carrying[0] else (b, vb, signs[1])
        return [(which, (sign * r).sum_to_size(value.shape))]

    def _execute(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        return _execute(self.graph_module, node, args, kwargs)


def _wrapper_prefixes(model: nn.Module) -> list[str]:
    """``"module."`` / ``"_orig_mod."`` prefixes of the wrappers around the traced module."""
    prefixes, prefix, m = [], "", model
    while m is not unwrap(m):
        inner = getattr(m, "module", None)
        attr = "module" if isinstance(inner, nn.Module) else "_orig_mod"
        prefix += attr + "."
        prefixes.append(prefix)
        m = getattr(m, attr)
    return prefixes[::-1]


def _first_signal(node: fx.Node, record: tuple, signal: set) -> tuple[fx.Node, Any]:
    """The first signal input of ``node`` and its recorded value."""
    found: list[tuple[fx.Node, Any]] = []

    def take(n: fx.Node, value: Any) -> Any:
        if n in signal and not found:
            found.append((n, value))
        return value

    rules.zip_args(node.args, record[0], take)
    rules.zip_args(node.kwargs, record[1], take)
    return found[0] if found else (None, None)


def _value_of(node: fx.Node, record: tuple, wanted: fx.Node) -> Any:
    found: list[Any] = []

    def take(n: fx.Node, value: Any) -> Any:
        if n is wanted and not found:
            found.append(value)
        return value

    rules.zip_args(node.args, record[0], take)
    rules.zip_args(node.kwargs, record[1], take)
    return found[0]


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
        model: any ``nn.Module`` that ``torch.fx`` can trace (VGG, ResNet, MobileNet,
            EfficientNet, ConvNeXt, RegNet, ShuffleNet, ...; wrappers are traced through).
        images: ``(B,3,H,W)`` or ``(3,H,W)`` float tensor, preprocessed for the model.
        layer: a module name from ``model.named_modules()`` (or the module) that runs once and
            outputs ``(B,K,h,w)``; between it and the pixels no attention (a clear error names
            the op and the layers before it that can be explained).
        channel: the channel to visualise, one int or one per image.
        stride_fix: upsample before strided transposed convolutions (no grid artefacts).
        relu: "guided" (default) or "deconvnet": the rule of every activation.
        bn: "scale" (default, every normalisation's recorded affine scale) or "identity".

    The model comes back exactly as it went in (modes, flags, grads, buffers; no hooks).
    A blank map (no positive signal reached an image's pixels) comes with a
    :class:`famwidget.explanation.DegenerateMapWarning`.
    """
    images = check_images(images).to(model_device(model))
    name, _ = resolve_layer(model, layer)
    maps = Deconvnet(model, stride_fix=stride_fix, relu=relu, bn=bn).heatmap(images, name, channel)
    blank = (maps.flatten(1).amax(dim=1) <= 0).nonzero()[:, 0].tolist()
    if blank:
        hint = "; relu='deconvnet' ignores the forward signs" if relu == "guided" else ""
        warnings.warn(
            f"deconvnet at {name!r}: the map of image(s) {blank} is blank, no positive signal "
            f"reached the pixels (the {relu} rule stopped it on the way, or the channel is "
            f"dead there{hint})",
            DegenerateMapWarning,
            stacklevel=2,
        )
    return maps
