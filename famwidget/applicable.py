"""Which methods apply to a model, and why the others do not (what the widget offers).

:func:`available_methods` answers ``{method: None}`` for a method that applies and
``{method: reason}`` for one that does not:

- the CAM methods (``grad-cam``, ``score-cam``) need a class output
  (:func:`famwidget.inputs.has_classes`);
- ``fixations`` needs a rule for every op of the recorded graph: H1's
  ``fixations.check_supported(model, example)`` when it exists, else one quick fixations run
  whose ``ValueError``/``TypeError`` is the reason;
- methods that need an option they cannot run without (``vebi``: ``interpreter=``) say so;
- the layer methods need a layer whose output layout can be read.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .explainers import fixations as fixations_module
from .explainers.graph import unwrap
from .inputs import has_classes
from .layout import LayoutError, Reader, default_layer_name
from .registry import method_info, methods
from .tap import preserved, readable_layers, resolve_layer

CLASS_METHODS = ("grad-cam", "score-cam")


def available_methods(
    model: nn.Module,
    images: Tensor,
    layer: str | nn.Module | None = None,
    **options: Any,
) -> dict[str, str | None]:
    """For every registered method: ``None`` when it applies to ``model`` on ``images``
    ``(B,C,H,W)`` at ``layer`` (``None``: the default layer), else the reason it does not.

    ``options`` are what the caller would pass (``interpreter=`` for ``vebi``). Costs one probing
    forward pass of one image, plus a fixations run when the graph engine has no cheaper check;
    the model comes back exactly as it went in.
    """
    model = unwrap(model)
    example = images[:1]
    layer_reason = _layer_reason(model, example, layer)
    notes: dict[str, str | None] = {}
    for name in methods():
        info = method_info(name)
        missing = [r for r in info.requires if options.get(r) is None]
        if missing:
            notes[name] = f"needs {', '.join(f'{r}=' for r in missing)}" + (
                " (a fitted fw.Interpreter)" if "interpreter" in missing else ""
            )
        elif name in CLASS_METHODS and not has_classes(model):
            notes[name] = (
                "the model has no class output (no final nn.Linear classifier, no num_classes): "
                "explain its feature vector with grad-fam / score-fam"
            )
        elif name == "fixations":
            notes[name] = fixations_reason(model, example)
        elif info.needs_layer:
            notes[name] = layer_reason
        else:
            notes[name] = None
    return notes


def _layer_reason(model: nn.Module, example: Tensor, layer: str | nn.Module | None) -> str | None:
    """Why no map can be made at ``layer`` (None: the default one), or None when one can."""
    try:
        with preserved(model):
            layers = readable_layers(model, example)
    except Exception as error:
        return f"the model's forward pass failed ({type(error).__name__}: {error})"
    if layer is None:
        if default_layer_name(model, layers) is None:
            return "no layer of the model outputs a map on a spatial grid"
        return None
    try:
        name, module = resolve_layer(model, layer)
        if name in layers:
            return None
        Reader(model, name, module, example.shape[-2:])  # attention internals
    except (LayoutError, ValueError, TypeError) as error:
        return str(error)
    return f"the output of layer {name!r} cannot be read as maps on the image grid"


def fixations_reason(model: nn.Module, example: Tensor) -> str | None:
    """Why CNN Fixations cannot walk ``model`` back from its output, or None when it can."""
    check = getattr(fixations_module, "check_supported", None)
    if check is not None:
        return check(model, example)
    function = method_info("fixations").function
    try:
        function(model, example, target=None, output_key=None, autocast=None)
    except (ValueError, TypeError, NotImplementedError) as error:
        return str(error)
    return None
