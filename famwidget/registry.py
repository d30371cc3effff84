"""The method registry: every built-in method family declares its ``METHODS`` list and is
collected here the same way; ``register`` adds more at run time.

Import order is one way: explainers -> ``method`` (leaf); ``registry`` -> explainers;
``api`` -> ``registry``. No explainer imports this module or ``api``.
"""

from __future__ import annotations

from .explainers import fixations, gradfam, interpretation, scorefam
from .method import Method

_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to ``fw.methods()`` and ``fw.explain(method=...)``."""
    _REGISTRY[method.name] = method
    return method


def methods() -> list[str]:
    """Names accepted by ``fw.explain(method=...)``."""
    return sorted(_REGISTRY)


def method_info(name: str) -> Method:
    """The registered :class:`Method` called ``name`` (``ValueError`` listing them if unknown)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(methods())}")
    return _REGISTRY[name]


for _family in (gradfam, scorefam, fixations, interpretation):
    for _method in _family.METHODS:
        register(_method)
