"""Capture a layer's output during a forward pass, and leave the model exactly as it was found.

Two pieces, both context managers whose exit runs also when the body raises:

- :func:`preserved` snapshots what an explanation could change on a model (every module's
  ``training`` flag, every parameter's ``requires_grad`` and ``.grad``) and puts it all back.
- :class:`Tap` registers one forward hook on one layer, keeps the layer's output ``(B,K,h,w)``,
  and removes the hook on exit. Gradients are taken with ``torch.autograd.grad`` on the kept
  tensor, so no parameter ever receives a ``.grad``.

Layers are named as in ``model.named_modules()``; :func:`resolve_layer` turns a name, a module or
``None`` (the last module with a 4-D output) into ``(name, module)``.
"""

from __future__ import annotations

import difflib
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that serialises explanations of one model across threads (widget worker, user)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def preserved(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode (by default) and restore everything afterwards.

    Restored on exit: each module's ``training`` flag, each parameter's ``requires_grad``
    and each parameter's ``.grad`` (the very tensor that was there, or ``None``). Holds the
    model's lock meanwhile, so two threads never interleave their save and restore.
    """
    with model_lock(model):
        modes = [(m, m.training) for m in model.modules()]
        params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
        try:
            if eval_mode:
                model.eval()
            yield model
        finally:
            for m, training in modes:
                m.training = training
            for p, requires_grad, grad in params:
                p.requires_grad_(requires_grad)
                p.grad = grad


class Tap:
    """Forward hook on one layer that keeps its output.

    ``with Tap(layer) as tap: model(x)`` leaves ``tap.output`` as the layer output ``(B,K,h,w)``
    of the last forward pass (still in the autograd graph when gradients were enabled).
    ``tap.enabled = False`` lets internal re-forwards run without recording anything.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.output: Tensor | None = None
        self.enabled = True
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, module: nn.Module, inputs: tuple, output: object) -> Tensor | None:
        if not self.enabled:
            return None
        kept = output[0] if isinstance(output, (tuple, list)) and output else output
        if not isinstance(kept, Tensor) or kept.dim() != 4:
            found = tuple(kept.shape) if isinstance(kept, Tensor) else type(kept).__name__
            raise ValueError(
                f"the explained layer must output a 4-D tensor (B,K,h,w), it gave {found}; "
                "pick a convolutional layer (layer=None picks the last one)"
            )
        self.output = kept
        if kept is output:
            # Later in-place ops (``out += identity``, ReLU(inplace=True)) must not rewrite the
            # kept tensor: the rest of the network gets a copy, the tap keeps the original.
            return kept.clone()
        return None

    def __enter__(self) -> Tap:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule of ``model`` (the names ``layer=`` accepts), root excluded."""
    return [name for name, _ in model.named_modules() if name]


def spatial_layers(model: nn.Module, example: Tensor) -> list[str]:
    """Names of the modules whose output is 4-D ``(B,K,h,w)`` with ``h*w > 1``, in execution order.

    Runs one forward pass of ``example`` under ``torch.no_grad()`` with temporary hooks.
    """
    order: list[str] = []
    handles = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, (tuple, list)) and output:
                output = output[0]
            spatial = isinstance(output, Tensor) and output.dim() == 4
            if spatial and output.shape[-2] * output.shape[-1] > 1 and name not in order:
                order.append(name)

        return hook

    with model_lock(model):  # no other thread's forward pass may run through these hooks
        try:
            for name, module in model.named_modules():
                if name:
                    handles.append(module.register_forward_hook(record(name)))
            with torch.no_grad():
                model(example)
        finally:
            for h in handles:
                h.remove()
    return order


def resolve_layer(
    model: nn.Module, layer: str | nn.Module | None, example: Tensor | None = None
) -> tuple[str, nn.Module]:
    """Turn ``layer`` (a name, a module of ``model``, or ``None``) into ``(name, module)``.

    ``None`` picks the last module, in execution order, whose output is 4-D; that needs
    ``example`` (a batch the model accepts) for one probing forward pass. A name that is not
    in ``model.named_modules()`` raises ``ValueError`` listing the valid names.
    """
    modules = dict(model.named_modules())
    if isinstance(layer, str):
        if layer in modules and layer:
            return layer, modules[layer]
        names = layer_names(model)
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.6)
        top = [n for n in names if "." not in n]
        rest = [n for n in names if n not in close and n not in top]
        shown = ", ".join(repr(n) for n in [*close, *top, *rest][:60])
        more = " ..." if len(names) > 60 else ""
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"layer {layer!r} is not a submodule of the model{hint}; valid names: {shown}{more}"
        )
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer and name:
                return name, module
        raise ValueError(
            "layer is a module that is not inside the model; pass one of model.named_modules()"
        )
    if layer is None:
        if example is None:
            raise ValueError("layer=None needs an example batch to find the last 4-D layer")
        candidates = spatial_layers(model, example)
        if not candidates:
            raise ValueError(
                "the model has no submodule with a 4-D (B,K,h,w) output; pass layer= explicitly"
            )
        return candidates[-1], modules[candidates[-1]]
    raise TypeError(
        f"layer must be a module name (str), an nn.Module or None, not {type(layer).__name__}"
    )
