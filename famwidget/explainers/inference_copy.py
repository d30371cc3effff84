"""A faster copy of a model for Score-FAM's masked forwards: BatchNorm folded, weights cast.

    copy = inference_copy(model, torch.bfloat16)   # an fx.GraphModule, or None

The copy is the model's graph as the graph engine traces it (:func:`famwidget.explainers.graph.
trace`) with its own modules and tensors (the user's model is never touched):

- each eval-mode ``BatchNorm1d/2d/3d`` with running statistics whose input is a convolution's
  output used by nothing else is folded into that convolution::

      s = gamma / sqrt(var + eps);   W' = W * s[:, None, ...];   b' = (b - mean) * s + beta

  (computed in float64, so the fold itself adds no rounding beyond the final cast);
- the weights of convolutions and linear layers are stored in ``dtype`` (autocast would cast
  them again on every forward), 4-D ones in channels-last order;
- everything else (norms that were not folded, attention, leaves fx could not trace) is a copy
  of the model's module, in its own dtype;
- no module of the copy has hooks (a hook on a module fx traces through is part of the
  traced graph, as :func:`~famwidget.explainers.graph.trace` saw it).

Measured on a 2-core AVX512-BF16 CPU (paired runs, untrained ResNet-18, batches of 8 at
224x224, 4 rounds of 3-4 s each): bf16 autocast on the model 137-141 images/s,
the copy under autocast 148-168 images/s (1.08-1.2x); ``torch.compile`` (inductor, freezing)
of a bf16 copy 189-213 images/s, but 7.5 s to compile with a warm cache and 24.5 s cold, so it
is not used: inside ``fw.explain`` it gained nothing measurable (3.32 vs 3.40 s per ResNet-18
Score-FAM, 5 images, after compiling; see the README's performance section).

The copy is cached per model and rebuilt when any parameter or buffer is replaced or changed
in place (its ``_version``), when a module is added or removed, or a ``training`` flag flips.
:func:`inference_copy` returns ``None`` when the model cannot be traced or copied; the caller
runs the model itself then. The caller checks the copy against the model on the clean images before
using it (:func:`agrees`).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator

import torch
from torch import Tensor, fx, nn

from .graph import _fingerprint, trace, unwrap

_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

AGREEMENT = 2e-2
"""The copy is used only when, on the clean images, every floating output of the copy is within
``2e-2 * ||output||`` (L2, per image) of the model's under the same autocast. bf16 itself
differs from fp32 by about 3e-3 there (cosine 0.99999); a wrong fold differs by O(1)."""


def inference_copy(model: nn.Module, dtype: torch.dtype | None) -> fx.GraphModule | None:
    """The folded copy of ``model`` (weights of convs and linears in ``dtype``; ``None``: their
    own dtype), cached; ``None`` when the model cannot be traced or copied."""
    model = unwrap(model)
    key = (_fingerprint(model), _versions(model), dtype)
    cached = _COPIES.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        built = _build(trace(model, "score-fam"), dtype)
    except Exception:  # fx cannot trace it, or a module cannot be copied: run the model itself
        built = None
    _COPIES[model] = (key, built)
    return built


def _versions(model: nn.Module) -> tuple:
    """Every parameter's and buffer's in-place version (an optimizer step changes them)."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((t.data_ptr(), t._version) for t in tensors)


def _build(traced: fx.GraphModule, dtype: torch.dtype | None) -> fx.GraphModule:
    graph = copy.deepcopy(traced.graph)
    root: dict[str, object] = {}
    folded: dict[str, nn.Module] = {}
    for node in list(graph.nodes):
        pair = _conv_norm(traced, node)
        if pair is None:
            continue
        conv_node, conv, norm = pair
        folded[conv_node.target] = fold(conv, norm)
        node.replace_all_uses_with(conv_node)
        graph.erase_node(node)
    for node in graph.nodes:
        if node.op == "call_module" and node.target not in root:
            module = folded.get(node.target) or _copy(traced.get_submodule(node.target), dtype)
            root[node.target] = _cast(_without_hooks(module), dtype)
        elif node.op == "get_attr" and node.target not in root:
            value = _attribute(traced, node.target)
            root[node.target] = copy.deepcopy(value)
    graph.lint()
    built = fx.GraphModule(root, graph)
    built.eval()
    for p in built.parameters():
        p.requires_grad_(False)
    return built


def _conv_norm(
    traced: fx.GraphModule, node: fx.Node
) -> tuple[fx.Node, nn.Module, nn.Module] | None:
    """``(conv node, conv, norm)`` when ``node`` is a foldable BatchNorm after a conv."""
    if node.op != "call_module":
        return None
    norm = traced.get_submodule(node.target)
    if not isinstance(norm, NORMS) or norm.training or norm.running_mean is None:
        return None
    if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
        return None
    source = node.args[0]
    if source.op != "call_module" or len(source.users) != 1:
        return None
    conv = traced.get_submodule(source.target)
    if not isinstance(conv, CONVS) or conv.weight.shape[0] != norm.num_features:
        return None
    if (
        sum(1 for n in traced.graph.nodes if n.op == "call_module" and n.target == source.target)
        > 1
    ):
        return None  # the same conv module called twice: it cannot be folded for one call
    return source, conv, norm


def fold(conv: nn.Module, norm: nn.Module) -> nn.Module:
    """A new conv computing ``norm(conv(x))`` (eval mode) in one convolution."""
    scale = norm.running_var.double().add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    shift = -norm.running_mean.double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.double()
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    weight = conv.weight.double() * scale.view(shape)
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    fused = copy.deepcopy(conv, {id(conv.weight): weight, id(conv.bias): None})
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return fused


def _copy(module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """``copy.deepcopy(module)``, with the weights of convs and linears made in ``dtype``
    directly (no full-precision copy of them is made on the way: peak memory)."""
    memo: dict[int, object] = {}
    if dtype is not None:
        for m in module.modules():
            if isinstance(m, (*CONVS, nn.Linear)):
                for p in m.parameters(recurse=False):
                    if p.is_floating_point():
                        memo[id(p)] = nn.Parameter(p.detach().to(dtype), requires_grad=False)
    return copy.deepcopy(module, memo)


HOOKS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
         "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
         "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")  # fmt: skip


def _without_hooks(module: nn.Module) -> nn.Module:
    """The copied module with no hooks: the user's hooks stay on the user's model (a hook that
    changes an output makes the copy disagree, and the model itself runs then)."""
    for m in module.modules():
        for name in HOOKS:
            found = getattr(m, name, None)
            if found is not None:
                found.clear()
    return module


def _cast(module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    if dtype is None:
        return module
    for m in module.modules():
        if isinstance(m, (*CONVS, nn.Linear)) and m.weight.is_floating_point():
            m.to(dtype)
            if m.weight.dim() == 4:
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return module


def _attribute(module: nn.Module, target: str) -> object:
    owner = module
    *path, name = target.split(".")
    for part in path:
        owner = getattr(owner, part)
    return getattr(owner, name)


def agrees(copy_output: object, model_output: object) -> bool:
    """Whether every floating tensor of the copy's output is within :data:`AGREEMENT` of the
    model's (relative L2 per image, first axis), with the same structure."""
    pairs = list(_tensor_pairs(copy_output, model_output))
    if not pairs:
        return False
    for a, b in pairs:
        if a is None or b is None or a.shape != b.shape:
            return False
        a, b = a.detach().double().flatten(1), b.detach().double().flatten(1)
        error = (a - b).norm(dim=1)
        if not bool((error <= AGREEMENT * b.norm(dim=1) + 1e-12).all()):
            return False
    return True


def _tensor_pairs(a: object, b: object) -> Iterator[tuple[Tensor | None, Tensor | None]]:
    """The floating tensors of two outputs, pairwise; ``(None, None)`` where they differ."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.is_floating_point() and b.dim() >= 1:
            yield a, b
    elif isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        for k in a:
            yield from _tensor_pairs(a[k], b[k])
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for x, y in zip(a, b, strict=True):
            yield from _tensor_pairs(x, y)
    elif hasattr(a, "__dict__") and type(a) is type(b) and not isinstance(a, Tensor):
        yield from _tensor_pairs(vars(a), vars(b))
    elif isinstance(a, Tensor) or isinstance(b, Tensor) or type(a) is not type(b):
        yield None, None
