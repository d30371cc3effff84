"""Capture a layer's output during a forward pass, and leave the model exactly as it was found.

Two pieces, both context managers whose exit runs also when the body raises:

- :func:`preserved` snapshots what an explanation could change on a model (every module's
  ``training`` flag, every parameter's ``requires_grad`` and ``.grad``) and puts it all back.
- :class:`Tap` registers one forward hook on one layer, keeps the layer's output (read as
  channel maps ``(B,K,h,w)`` through :mod:`famwidget.layout`), and removes the hook on exit.
  Gradients are taken with ``torch.autograd.grad`` on the kept tensor, so no parameter ever
  receives a ``.grad``.

Layers are named as in ``model.named_modules()``; :func:`resolve_layer` turns a name, a module or
``None`` (the default layer) into ``(name, module)``; :func:`strip_wrapper_prefix` accepts
the names of a ``torch.compile`` / ``DataParallel`` / ``DistributedDataParallel`` wrapper.
"""

from __future__ import annotations

import difflib
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import torch
from torch import Tensor, nn

from .layout import (
    Layout,
    LayoutError,
    Reader,
    attention_internal,
    default_layer_name,
    read_layout,
)

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

    ``with Tap(layer) as tap: model(x)`` leaves ``tap.output`` as the layer output of the last
    forward pass (still in the autograd graph when gradients were enabled). With a ``reader``
    (a :class:`famwidget.layout.Reader`) the output may be ``(B,C,h,w)``, ``(B,h,w,C)`` or tokens
    ``(B,N,C)``: ``tap.layout`` says how it was read and ``tap.maps()`` gives the channel maps
    ``(B,K,h,w)``; without one it must be ``(B,K,h,w)``.
    ``tap.enabled = False`` lets internal re-forwards run without recording anything.

    ``leaf=True`` (for gradients with respect to the layer only; run the forward under
    ``torch.no_grad()``): the kept output is a detached leaf that requires grad, gradient
    recording is switched on from the layer to the end of the forward, and the rest of the
    network gets a copy of the leaf. Nothing before the layer is recorded (no activations saved,
    no parameter in the graph) and the backward stops at the layer. The grad mode switched on
    here lasts until the caller's ``no_grad`` block exits. ``tap.substituted`` says whether the
    output could be replaced (a tensor, a list, a tuple or a named tuple whose first item is the
    map); when it is False nothing after the layer depends on the leaf.
    """

    def __init__(self, module: nn.Module, reader: Reader | None = None, leaf: bool = False) -> None:
        self.module = module
        self.reader = reader
        self.leaf = leaf
        self.output: Tensor | None = None
        self.layout: Layout | None = None
        self.enabled = True
        self.substituted = False
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, module: nn.Module, inputs: tuple, output: object) -> Tensor | None:
        if not self.enabled:
            return None
        kept = output[0] if isinstance(output, (tuple, list)) and output else output
        if not isinstance(kept, Tensor):
            raise LayoutError(
                f"the explained layer must output a tensor, it gave {type(kept).__name__}; "
                "pick a convolutional layer or a transformer block (layer=None picks one)"
            )
        if self.reader is not None:
            self.layout = self.reader.read(kept)
        elif kept.dim() != 4:
            raise LayoutError(
                f"the explained layer must output a 4-D tensor (B,K,h,w), it gave "
                f"{tuple(kept.shape)}; pick a convolutional layer (layer=None picks the last one)"
            )
        else:
            self.layout = Layout("nchw", (kept.shape[2], kept.shape[3]), kept.shape[1])
        if self.leaf:
            return self._leaf(kept, output)
        self.output = kept
        if kept is output:
            # Later in-place ops (``out += identity``, ReLU(inplace=True)) must not rewrite the
            # kept tensor: the rest of the network gets a copy, the tap keeps the original.
            return kept.clone()
        return None

    def _leaf(self, kept: Tensor, output: object) -> object:
        """Keep a leaf copy of ``kept`` that requires grad; the network continues from a clone."""
        leaf = kept.detach().requires_grad_(True)
        self.output = leaf
        torch.set_grad_enabled(True)  # from here on the forward is recorded
        passed = leaf.clone()  # in-place ops downstream (ReLU(inplace), +=) must not hit the leaf
        replaced = substitute_first(output, passed)
        self.substituted = replaced is not None
        return replaced

    def maps(self, t: Tensor | None = None) -> Tensor:
        """``t`` (default the kept output; or a gradient of it) as channel maps ``(B,K,h,w)``."""
        if self.output is None or self.layout is None:
            raise ValueError("the explained layer did not run in the model's forward pass")
        return self.layout.to_maps(self.output if t is None else t)

    def __enter__(self) -> Tap:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def substitute_first(output: object, new: Tensor) -> object | None:
    """``output`` with its map replaced by ``new``: the tensor itself, or the first item of a
    list, tuple or named tuple; ``None`` for any other container (it cannot be rebuilt)."""
    if isinstance(output, Tensor):
        return new
    if isinstance(output, list) and output:
        return [new, *output[1:]]
    if isinstance(output, tuple) and output:
        fields = getattr(output, "_fields", None)
        if fields:
            return output._replace(**{fields[0]: new})
        if type(output) is tuple:
            return (new, *output[1:])
    return None


WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefix(model: nn.Module, inner: nn.Module, layer: str) -> str:
    """A wrapper's layer name (``module.layer4``, ``_orig_mod.layer4``) as a name in ``inner``."""
    if inner is model:
        return layer
    names = dict(inner.named_modules())
    name = layer
    while name not in names or not name:
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        else:
            return layer
    return name


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule of ``model`` (the names ``layer=`` accepts), root excluded."""
    return [name for name, _ in model.named_modules() if name]


def readable_layers(model: nn.Module, example: Tensor) -> dict[str, Layout]:
    """Every layer whose output layout can be read, in the order their outputs are produced.

    One forward pass of ``example`` ``(1,C,H,W)`` under ``torch.no_grad()`` with temporary hooks
    (all removed, also when the forward raises). Layers inside attention modules, 1x1 grids and
    ambiguous shapes are left out. This is what the widget's layer picker offers (through
    :func:`spatial_layers`).
    """
    image_size = (int(example.shape[-2]), int(example.shape[-1]))
    found: dict[str, Layout] = {}
    handles = []
    modules = dict(model.named_modules())
    internal = {n for n in modules if n and attention_internal(model, n) is not None}

    def record(name: str, module: nn.Module):
        def hook(mod: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, (tuple, list)) and output:
                output = output[0]
            if not isinstance(output, Tensor) or name in found:
                return
            if output.dim() not in (3, 4) or output.shape[0] != example.shape[0]:
                return
            with suppress(LayoutError):
                found[name] = read_layout(
                    tuple(output.shape), image_size, model=model, module=module, name=name
                )

        return hook

    with model_lock(model):
        try:
            for name, module in modules.items():
                if name and name not in internal:
                    handles.append(module.register_forward_hook(record(name, module)))
            with torch.no_grad():
                model(example)
        finally:
            for h in handles:
                h.remove()
    return found


def spatial_layers(model: nn.Module, example: Tensor) -> list[str]:
    """Names of the modules whose output layout can be read, in the order outputs are produced.

    ``(B,C,h,w)``, channels-last ``(B,h,w,C)`` and token grids ``(B,N,C)`` with a grid larger
    than 1x1 (see :func:`readable_layers`; attention internals and ambiguous
    shapes are left out). One forward pass of ``example`` under ``torch.no_grad()``.
    """
    return list(readable_layers(model, example))


def resolve_layer(
    model: nn.Module, layer: str | nn.Module | None, example: Tensor | None = None
) -> tuple[str, nn.Module]:
    """Turn ``layer`` (a name, a module of ``model``, or ``None``) into ``(name, module)``.

    ``None`` picks :func:`famwidget.layout.default_layer_name` (CNNs: the last module, in
    execution order, with a ``(B,C,h,w)`` output; transformers: the last block); that needs
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
            raise ValueError("layer=None needs an example batch to find the layer to explain")
        chosen = default_layer_name(model, readable_layers(model, example))
        if chosen is None:
            raise ValueError(
                "the model has no submodule whose output is a map on a spatial grid "
                "((B,C,h,w), (B,h,w,C) or tokens (B,N,C)); pass layer= explicitly"
            )
        return chosen, modules[chosen]
    raise TypeError(
        f"layer must be a module name (str), an nn.Module or None, not {type(layer).__name__}"
    )
