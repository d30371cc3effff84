"""``fw.explain``: one entry point for every method (the methods live in ``registry``).

``explain`` checks the inputs, resolves the layer and the default target, and hands the work to the
method's function; it leaves the model exactly as it found it (see ``famwidget.tap``).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from .explainers.graph import unwrap
from .explanation import Explanation
from .inputs import check_images, model_device, prepare_images
from .layout import LAYOUTS, LayoutError
from .method import PRECISIONS, Method
from .registry import method_info, methods, register
from .tap import readable_layers, resolve_layer, strip_wrapper_prefix
from .targets import OutputKey, Target, as_target

__all__ = ["check_images", "explain", "method_info", "methods", "model_device", "register"]


_LAST_LAYER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_layer(model: nn.Module, images: Tensor) -> tuple[str, nn.Module]:
    """The layer ``layer=None`` explains, found once per model and input size.

    CNNs: the last layer with a ``(B,C,h,w)`` output larger than 1x1; transformers with a
    class or register token: the second-to-last block's output on the token grid (the last
    block's patch tokens never reach the output); others: the last block (see
    :func:`famwidget.layout.default_layer_name` for the rule and why).
    """
    model = unwrap(model)
    key = (tuple(images.shape[1:]), images.dtype, images.device)
    cache = _LAST_LAYER.setdefault(model, {})
    if key not in cache:
        from .tap import preserved

        with preserved(model):
            cache[key] = resolve_layer(model, None, images[:1])[0]
    return resolve_layer(model, cache[key])


def explain(
    model: nn.Module,
    images: Tensor,
    method: str = "grad-fam",
    layer: str | nn.Module | None = None,
    target: Target | Callable[[Any], Tensor] | None = None,
    *,
    output_key: OutputKey = None,
    precision: str = "auto",
    layout: str | None = None,
    **options: Any,
) -> Explanation:
    """Explain ``images`` ``(B,3,H,W)`` (or ``(3,H,W)``) with ``method``; returns an Explanation.

    Args:
        model: any ``nn.Module``; it comes back exactly as it went in (modes, flags, hooks, grads).
            ``torch.compile``, ``nn.DataParallel`` and ``DistributedDataParallel`` wrappers are
            explained through the module they wrap (layer names with or without their
            ``_orig_mod.`` / ``module.`` prefix).
        images: float tensor already preprocessed for the model; moved to the model's device.
        method: one of ``fw.methods()``.
        layer: a name from ``model.named_modules()``, a submodule, or ``None`` for the default
            (CNNs: the last layer with a ``(B,C,h,w)`` output; transformers: the last block).
        target: a ``fw.targets`` object or a callable ``output -> (B,)``; ``None`` means
            ``Embedding()`` for the FAM methods, ``Predicted()`` for the CAM methods.
        output_key: which element of a tuple/dict/dataclass/``ModelOutput`` output is the
            feature (default the first of a tuple, the only field of a mapping).
        precision: "fp32", or "bf16"/"fp16" autocast (maps are upcast to fp32 before resizing);
            "auto" (default) lets the method choose: "fp32" unless it measured a faster path
            with the same maps (Score-FAM/Score-CAM: bf16 on CPUs with native bf16).
        layout: how the layer's output is read: ``"nchw"`` (B,C,h,w), ``"nhwc"`` (B,h,w,C) or
            ``"tokens"`` (B,N,C) with class/register tokens first; ``None`` reads it from the
            shapes and the model, and raises naming this option where that is ambiguous
            (``grid=(h, w)``, a method option, gives a token grid that cannot be inferred).
            The Explanation records it as ``exp.layout``.
        **options: method-specific options (see each method's docstring).
    """
    info = method_info(method) if isinstance(method, str) else None
    if info is None:
        raise TypeError(f"method must be a string, one of {methods()}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(
            f"layout must be None (inferred) or one of {list(LAYOUTS)}, got {layout!r}"
        )
    wrapper, model = model, unwrap(model)
    if isinstance(layer, str):
        layer = strip_wrapper_prefix(wrapper, model, layer)
    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {['auto', *PRECISIONS]}, got {precision!r}")
    images = prepare_images(images, model)
    if precision == "auto":
        precision = info.auto_precision(model, images) if info.auto_precision else "fp32"
    chosen = as_target(target, info.default_target() if info.default_target else None)
    kwargs: dict[str, Any] = dict(
        target=chosen, output_key=output_key, autocast=PRECISIONS[precision], **options
    )
    if not info.needs_layer and layer is not None:
        raise ValueError(
            f"method {method!r} walks the whole network: it takes no layer= (got {layer!r})"
        )
    if info.needs_layer:
        if layer is None:
            name, module = default_layer(model, images)
        else:
            name, module = resolve_layer(model, layer)
        kwargs.update(layer=name, module=module)
        if _accepts(info, "layout"):
            kwargs.update(layout=layout)
        elif layout is not None:
            raise TypeError(f"method {info.name!r} has no layout= option")
    elif layout is not None:
        raise ValueError(f"method {method!r} explains no layer: it takes no layout=")
    _check_options(info, options)
    try:
        return info.function(model, images, **kwargs)
    except LayoutError as error:
        raise LayoutError(f"{error}. {_readable_hint(model, images)}") from None


def _accepts(info: Method, name: str) -> bool:
    params = inspect.signature(info.function).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _readable_hint(model: nn.Module, images: Tensor) -> str:
    """``"Layers whose output can be read: ..."``, the last ones first (one probing pass)."""
    from .tap import preserved

    try:
        with preserved(model):
            layers = readable_layers(model, images[:1])
    except Exception:  # the hint must never hide the error it explains
        return ""
    if not layers:
        return "No layer of this model outputs a map on a spatial grid"
    shown = [f"{n!r} ({lay.describe()})" for n, lay in reversed(layers.items())][:6]
    return "Layers whose output can be read, last first: " + ", ".join(shown)


def _check_options(info: Method, options: dict[str, Any]) -> None:
    params = inspect.signature(info.function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    fixed = {"model", "images", "layer", "module", "target", "output_key", "autocast", "method"}
    fixed.add("layout")
    accepted = sorted(set(params) - fixed)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"method {info.name!r} has no option {', '.join(unknown)}; "
            f"its options are: {', '.join(accepted) or 'none'}"
        )
