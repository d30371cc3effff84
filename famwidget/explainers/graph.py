"""The ``torch.fx`` graph that the gradient-free methods walk (fixations, deconvnet).

One traced graph per model, cached while the model's modules and tensors stay the same, and one
way to name a node in error messages.
"""

from __future__ import annotations

import weakref

from torch import fx, nn

_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def trace(model: nn.Module, method: str) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``, cached; ``method`` names the caller in the error."""
    key = _fingerprint(model)
    cached = _TRACES.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        traced = fx.symbolic_trace(model)
    except Exception as error:
        raise ValueError(
            f"{method} follows the model's graph, and torch.fx could not trace "
            f"{type(model).__name__} ({type(error).__name__}: {error}). Models whose forward "
            "branches on tensor values cannot be traced; wrap such parts in a leaf module or "
            "explain a traceable sub-model"
        ) from error
    _TRACES[model] = (key, traced)
    return traced


def _fingerprint(model: nn.Module) -> tuple:
    modules = tuple((name, id(m), m.training) for name, m in model.named_modules())
    tensors = tuple(id(t) for t in model.parameters()) + tuple(id(t) for t in model.buffers())
    return (type(model).forward, modules, tensors)


def describe(module: fx.GraphModule, node: fx.Node) -> str:
    """``"module 'layer1.0.relu' (ReLU)"`` or ``"torch.mul in module 'features.3' (...)"``."""
    if node.op == "call_module":
        return f"module {node.target!r} ({type(module.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        what = f"method Tensor.{node.target}"
    else:
        target = node.target
        what = f"{getattr(target, '__module__', None) or ''}.{getattr(target, '__name__', target)}"
        what = what.lstrip(".")
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, kind = list(stack.values())[-1]
        name = getattr(kind, "__name__", str(kind))
        return f"{what} in module {path!r} ({name})"
    return f"{what} in the model's forward"
