"""The shared vocabulary of CNN Fixations' rules: fixation sets, the recorded walk, rules.

A set of fixations at a graph node is an int64 tensor ``(N, r+1)`` for a node whose value has
``r`` dims: the full index ``(b, i_1, ..., i_{r-1})`` into the node's output and a last column
``s`` in {-1, +1}, the sign of the value being explained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, fx

from .graph import describe

Points = Tensor
"""``(N, r+1)`` int64: the index into an ``r``-dim node value, then the sign column."""
Routed = list[tuple[fx.Node, Points]]

CHUNK_ELEMENTS = 1 << 23
"""Most elements in one temporary (points x window) tensor; larger point sets are chunked."""


@dataclass
class Walk:
    """What the rules read while walking back: the recorded forward pass of one batch.

    Attributes:
        module: the traced model.
        records: for each node whose rule needs values, the ``(args, kwargs)`` the op was
            called with (tensors as they were at that moment).
        shapes: the output shape of every node that produced a tensor.
        active: the nodes whose value depends on the input images.
        loc: "center" or "argmax", the position rule of convolutions.
    """

    module: fx.GraphModule
    records: dict[fx.Node, tuple[tuple, dict]]
    shapes: dict[fx.Node, torch.Size]
    active: set[fx.Node]
    loc: str = "argmax"

    def arg(self, node: fx.Node, index: int, name: str, default: Any = None) -> Any:
        """The recorded value of argument ``index`` (positional) or ``name`` (keyword)."""
        args, kwargs = self.records[node]
        if len(args) > index:
            return args[index]
        return kwargs.get(name, default)


@dataclass(frozen=True)
class Rule:
    """How one kind of op routes fixations: ``apply(walk, node, points) -> [(input node, points)]``.

    ``sources(node, active)`` lists the input nodes that may receive points (checked before
    running anything, so an unsupported op on the way fails early); ``needs_values`` says
    whether the forward pass must keep the op's inputs; ``distinct`` that distinct points
    always move to distinct points (no deduplication needed after it).
    """

    name: str
    apply: Callable[[Walk, fx.Node, Points], Routed]
    sources: Callable[[fx.Node, set[fx.Node]], list[fx.Node]]
    needs_values: bool = False
    distinct: bool = False
    also_records: Callable[[fx.Node], list[fx.Node]] | None = field(default=None)

    def recorded(self, node: fx.Node) -> list[fx.Node]:
        """The nodes whose recorded inputs this rule reads at ``node``."""
        if not self.needs_values:
            return []
        return [node, *(self.also_records(node) if self.also_records else [])]


# ----------------------------------------------------------------------------- index helpers


def ravel(coords: Tensor, shape: Sequence[int]) -> Tensor:
    """Row-major flat index ``(N,)`` of ``coords`` ``(N, len(shape))`` in ``shape``."""
    flat = torch.zeros(coords.shape[0], dtype=torch.long, device=coords.device)
    for d, size in enumerate(shape):
        flat = flat * int(size) + coords[:, d]
    return flat


def unravel(flat: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`ravel`: ``(N,)`` → ``(N, len(shape))``."""
    cols = []
    for size in reversed(list(shape)):
        cols.append(flat % int(size))
        flat = flat // int(size)
    return torch.stack(cols[::-1], dim=1) if cols else flat.new_zeros(flat.shape[0], 0)


def dedupe(points: Points, shape: Sequence[int]) -> Points:
    """The distinct rows of ``points`` for a node of ``shape`` (one sort of int64 keys)."""
    if points.shape[0] <= 1:
        return points
    keys = ravel(points[:, :-1], shape) * 2 + (points[:, -1] > 0).long()
    keys, order = keys.sort()
    first = torch.ones_like(keys, dtype=torch.bool)
    first[1:] = keys[1:] != keys[:-1]
    return points[order[first]]


def sign_of(values: Tensor) -> Tensor:
    """``(N,)`` int64 in {-1, +1} (zero counts as +1)."""
    return torch.where(values < 0, -1, 1).long()


def chunks(n: int, per_point: int) -> list[slice]:
    """Slices of ``range(n)`` whose temporaries stay under :data:`CHUNK_ELEMENTS` elements."""
    step = max(1, CHUNK_ELEMENTS // max(1, per_point))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def with_sign(coords: Tensor, sign: Tensor) -> Points:
    return torch.cat([coords, sign[:, None]], dim=1)


# ----------------------------------------------------------------------------- sources


def first_source(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    """The op's first (or ``input=``) argument, if it depends on the images."""
    first = node.args[0] if node.args else node.kwargs.get("input")
    return [first] if isinstance(first, fx.Node) and first in active else []


def _operands(node: fx.Node) -> list[Any]:
    args = list(node.args[:2])
    if len(args) < 2:
        args.append(node.kwargs.get("other"))
    return args


def operand_sources(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    """Both operands of a binary op that depend on the images."""
    return [a for a in _operands(node) if isinstance(a, fx.Node) and a in active]


def _cat_inputs(node: fx.Node) -> Sequence[Any]:
    return node.args[0] if node.args else node.kwargs["tensors"]


def cat_sources(node: fx.Node, active: set[fx.Node]) -> list[fx.Node]:
    return [a for a in _cat_inputs(node) if isinstance(a, fx.Node) and a in active]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


# ----------------------------------------------------------------------------- the walk


def plan_walk(
    traced: fx.GraphModule,
    out_node: Any,
    active: set[fx.Node],
    rule_for: Callable[[fx.GraphModule, fx.Node], Rule | None],
    supported: str,
) -> dict[fx.Node, Rule]:
    """The rule of every node that fixations can reach from ``out_node``; fails on the first op
    on the way that has none (before anything runs)."""
    if not isinstance(out_node, fx.Node) or out_node not in active:
        raise ValueError("CNN Fixations: the explained output does not depend on the images")
    plan: dict[fx.Node, Rule] = {}
    stack = [out_node]
    while stack:
        node = stack.pop()
        if node in plan or node.op == "placeholder":
            continue
        rule = rule_for(traced, node)
        if rule is None:
            leaves = traced.__dict__.get("_fw_leaves") or {}
            why = leaves.get(node.target) if node.op == "call_module" else None
            opaque = f" (torch.fx could not trace inside it: {why})" if why else ""
            raise ValueError(
                f"CNN Fixations has no rule for {describe(traced, node)}{opaque}; supported: "
                f"{supported}"
            )
        plan[node] = rule
        stack.extend(rule.sources(node, active))
    return plan


def walk_back(
    walk: Walk, plan: dict[fx.Node, Rule], out_node: fx.Node, start: Points, value: Tensor
) -> Points:
    """Move ``start`` from ``out_node`` to the images: fixations ``(N,5)`` = ``(b, c, y, x, s)``."""
    pending: dict[fx.Node, list[Points]] = {out_node: [start]}
    unsorted = {out_node}  # nodes whose points may repeat
    walk.shapes.setdefault(out_node, value.shape)
    for node in reversed(walk.module.graph.nodes):
        arrived = pending.pop(node, None)
        if not arrived:
            continue
        points = torch.cat(arrived) if len(arrived) > 1 else arrived[0]
        if points.shape[0] == 0:  # e.g. no start neuron (an embedding with nothing to explain)
            continue
        if len(arrived) > 1 or node in unsorted:
            points = dedupe(points, walk.shapes[node])
        if node.op == "placeholder":
            return points
        rule = plan[node]
        for source, moved in rule.apply(walk, node, points):
            if moved.shape[0]:
                pending.setdefault(source, []).append(moved)
                if not rule.distinct:
                    unsorted.add(source)
    return start.new_zeros(0, 5)
