"""Grad-FAM (seed 000) and Grad-CAM: channel weights from the mean gradient of the target.

    s       = target scalar per image        # Embedding(): ||f(x)||  -> Grad-FAM
    alpha_k = mean_ij ds/dA_k[i,j]           # Predicted() / ClassLogit(c) -> Grad-CAM
    M       = minmax(U(ReLU(sum_k alpha_k A_k)))

Grad-FAM and Grad-CAM are the same computation with different targets. Gradients are taken with
``torch.autograd.grad`` with respect to the tapped activations only: parameters never get ``.grad``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ..explanation import Explanation, flag_degenerate
from ..inputs import check_class_target, check_gradients
from ..layout import Layout, Reader
from ..maps import cam, cam_reasons
from ..method import Method
from ..tap import Tap, preserved
from ..targets import Embedding, OutputKey, Predicted, Target


def gradient_weights(
    model: nn.Module,
    images: Tensor,
    module: nn.Module,
    target: Target,
    output_key: OutputKey = None,
    autocast: torch.dtype | None = None,
    reader: Reader | None = None,
) -> tuple[Tensor, Tensor, Tensor, Layout]:
    """Forward and backward once: activations ``(B,K,h,w)``, weights ``(B,K)``, scores ``(B,)``.

    ``reader`` (a :class:`famwidget.layout.Reader`) reads a channels-last or token layer; the
    gradient is taken on the layer's own output and converted like it (prefix tokens dropped).
    Also returns the :class:`~famwidget.layout.Layout` that was read.

    The forward runs under ``torch.no_grad()`` up to the layer and records autograd only from
    the layer on (:class:`famwidget.tap.Tap` with ``leaf=True``): no activation before the layer
    is saved, no parameter joins the graph, and the backward stops at the layer. Where that
    cannot work (the layer's output is a container the tap cannot rebuild, or the model switches
    gradients off after the layer) the whole forward is recorded instead, with the same result.
    """
    with preserved(model):
        found = _gradients(model, images, module, target, output_key, autocast, reader, True)
        if found is None:
            found = _gradients(model, images, module, target, output_key, autocast, reader, False)
    assert found is not None  # the recorded path raises instead of giving up
    activations, grads, scores, layout = found
    weights = grads.float().mean(dim=(2, 3))
    return activations.float(), weights.detach(), scores.detach().float(), layout


def _gradients(
    model: nn.Module,
    images: Tensor,
    module: nn.Module,
    target: Target,
    output_key: OutputKey,
    autocast: torch.dtype | None,
    reader: Reader | None,
    leaf: bool,
) -> tuple[Tensor, Tensor, Tensor, Layout] | None:
    """One forward and backward: maps ``(B,K,h,w)``, their gradients, scores ``(B,)``, layout.

    ``leaf=True``: recorded from the layer on only; ``None`` when that recorded nothing that
    reaches the scores (the caller then records everything, ``leaf=False``).
    """
    if leaf:
        x, grad_mode = images.detach(), torch.no_grad()
    else:
        x, grad_mode = images.detach().clone().requires_grad_(True), torch.enable_grad()
    cast = torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None)
    with Tap(module, reader, leaf=leaf) as tap, torch.enable_grad():
        with grad_mode, cast:
            output = model(x)
            bound = target.bind(output, output_key)
            scores = bound.scalar(output)
        if tap.output is None:
            raise ValueError("the explained layer did not run in the model's forward pass")
        if not scores.requires_grad:
            if leaf:
                return None
            raise ValueError(
                f"the target {target!r} does not depend on the model output through autograd "
                "(a detached or constant score); a target must return a differentiable (B,) tensor"
            )
        (grads,) = torch.autograd.grad(scores.float().sum(), tap.output, allow_unused=True)
        if grads is None:
            if leaf:
                return None
            raise ValueError(
                "the target does not depend on the explained layer (a side branch?); pick a "
                "layer on the path to the output"
            )
        return tap.maps().detach(), tap.maps(grads), scores.detach(), tap.layout


def grad_fam(
    model: nn.Module,
    images: Tensor,
    *,
    layer: str,
    module: nn.Module,
    target: Target,
    output_key: OutputKey = None,
    autocast: torch.dtype | None = None,
    layout: str | None = None,
    grid: tuple[int, int] | None = None,
    method: str = "grad-fam",
) -> Explanation:
    """Grad-FAM / Grad-CAM of ``images`` ``(B,C,H,W)``: an Explanation, heatmap ``(B,H,W)``.

    ``layout`` (``"nchw"``, ``"nhwc"``, ``"tokens"``; ``None``: read from the shapes, see
    :mod:`famwidget.layout`) and ``grid=(h, w)`` say how the layer's output is read. A map that
    is constant for a real reason (dead layer, zero gradient, negative weighted sum) is flagged
    in ``degenerate`` and warned about (``DegenerateMapWarning``).
    """
    check_gradients(method)  # inference_mode: say so (no_grad is fine: enable_grad below)
    check_class_target(model, target, method)
    reader = Reader(model, layer, module, images.shape[-2:], layout, grid, batch=len(images))
    activations, weights, scores, read = gradient_weights(
        model, images, module, target, output_key, autocast, reader
    )
    heatmap = cam(activations, weights, tuple(images.shape[-2:]))
    explanation = Explanation(
        heatmap=heatmap,
        method=method,
        layer=layer,
        target=repr(target),
        activations=activations,
        weights=weights,
        scores=scores,
        options={
            "autocast": None if autocast is None else str(autocast),
            "grid": read.grid,
            "prefix_tokens": read.prefix,
        },
        layout=read.kind,
    )
    return flag_degenerate(explanation, cam_reasons(activations, weights))


grad_cam = partial(grad_fam, method="grad-cam")
"""Grad-CAM: :func:`grad_fam` with a class target (default ``Predicted()``)."""


METHODS = [
    Method("grad-fam", grad_fam, Embedding, summary="gradients of ||f(x)||"),
    Method("grad-cam", grad_cam, Predicted, summary="gradients of a class logit"),
]
