"""Which axis of a 4-D tensor in the traced graph holds the channels, read from the graph itself.

The deconvnet starts from one channel of a layer, so it must know the channel axis, and never
guess it from sizes. Every 4-D tensor gets axis labels, propagated from the images ``(b,c,h,w)``
through the graph: convolutions, pools and resizes give ``(b,c,h,w)``; ``permute`` / ``transpose``
move the labels (a Swin or ConvNeXt ``permute(0, 2, 3, 1)`` gives ``(b,h,w,c)``); elementwise
ops, normalisations, linear layers (they act on the last axis), additions, gates, concatenation
and slicing keep them; a reshape keeps them where it gives back the shape of the 4-D tensor it
started from (a channel shuffle: view to 5-D, transpose, view back); anything else: unknown.
"""

from __future__ import annotations

import operator

from torch import fx

from .graph import op_kind

NCHW = ("b", "c", "h", "w")
NHWC = ("b", "h", "w", "c")
_MAKES_NCHW = {"conv", "conv_transpose", "pool_max", "pool_avg", "resize"}
_KEEPS = {"activation", "norm", "linear", "add", "gate", "scale", "identity", "cat", "split"}
Labels = tuple[str, ...] | None


def layouts(gm: fx.GraphModule, order: list[fx.Node], shapes: dict, signal: set) -> dict:
    """Axis labels of every 4-D signal tensor in ``order`` (topological), ``None`` if unknown."""
    labels: dict[fx.Node, Labels] = {}
    for node in order:
        if node not in signal:
            continue
        if node.op == "placeholder":
            labels[node] = NCHW if len(shapes.get(node, ())) == 4 else None
            continue
        labels[node] = _labels(gm, node, shapes, signal, labels)
    return labels


def channel_axis(labels: Labels) -> int | None:
    """1 for ``(b,c,h,w)``, 3 for ``(b,h,w,c)``, ``None`` for anything else."""
    return {NCHW: 1, NHWC: 3}.get(labels) if labels is not None else None


def _labels(gm: fx.GraphModule, node: fx.Node, shapes: dict, signal: set, known: dict) -> Labels:
    shape = shapes.get(node)
    inputs = [n for n in node.all_input_nodes if n in signal]
    if node.op == "call_function" and node.target is operator.getitem and inputs:
        source = inputs[0]
        if source not in shapes:  # an item of a chunk / split result
            return known.get(source)
    if shape is None:  # a tuple (chunk, split): its items inherit the input's labels
        return known.get(inputs[0]) if inputs else None
    if len(shape) != 4:
        return None
    kind = op_kind(gm, node)
    if kind in _MAKES_NCHW:
        return NCHW
    first = next((n for n in inputs if shapes.get(n) == shape), inputs[0] if inputs else None)
    before = known.get(first)
    if kind in _KEEPS:
        return before if before is not None and len(before) == 4 else None
    if kind != "reshape":
        return None
    dims = _permutation(node)
    if dims is not None:
        return tuple(before[d] for d in dims) if before is not None else None
    if not _regroups(gm, node):  # padding, roll, expand, channel shuffle: axes stay
        return before if before is not None and len(before) == 4 else None
    return _same_shape_ancestor(gm, node, shapes, known)


_REGROUPING = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as",
               "reshape_as", "movedim", "moveaxis", "pixel_shuffle", "pixel_unshuffle"}  # fmt: skip


def _regroups(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether a reshape-kind op may regroup axes (a view), rather than keep them (padding)."""
    if node.op == "call_module":
        name = type(gm.get_submodule(node.target)).__name__
        return name in ("Flatten", "Unflatten", "PixelShuffle", "PixelUnshuffle")
    target = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return target in _REGROUPING or node.target is operator.getitem


def _permutation(node: fx.Node) -> tuple[int, ...] | None:
    """The axis order of a ``permute`` / ``transpose`` / ``swapaxes`` on a 4-D tensor."""
    target = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    rest = list(node.args[1:])
    if target == "permute":
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
        dims = node.kwargs.get("dims", dims)
        if all(isinstance(d, int) for d in dims) and len(dims) == 4:
            return tuple(d % 4 for d in dims)
        return None
    if (
        target in ("transpose", "swapaxes")
        and len(rest) == 2
        and all(isinstance(d, int) for d in rest)
    ):
        order = [0, 1, 2, 3]
        a, b = rest[0] % 4, rest[1] % 4
        order[a], order[b] = order[b], order[a]
        return tuple(order)
    return None


def _same_shape_ancestor(gm: fx.GraphModule, node: fx.Node, shapes: dict, known: dict) -> Labels:
    """Through a chain of reshapes back to a 4-D tensor of the same shape: its labels."""
    shape = shapes[node]
    current = node
    for _ in range(16):
        inputs = [n for n in current.all_input_nodes if n in known]
        if not inputs:
            return None
        current = inputs[0]
        if shapes.get(current) == shape:
            return known.get(current)
        if op_kind(gm, current) not in ("reshape", "identity"):
            return None
    return None
