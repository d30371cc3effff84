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
    """
    x = images.detach().clone().requires_grad_(True)
    with preserved(model), Tap(module, reader) as tap, torch.enable_grad():
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            output = model(x)
            bound = target.bind(output, output_key)
            scores = bound.scalar(output)
        if tap.output is None:
            raise ValueError("the explained layer did not run in the model's forward pass")
        if not scores.requires_grad:
            raise ValueError(
                f"the target {target!r} does not depend on the model output through autograd "
                "(a detached or constant score); a target must return a differentiable (B,) tensor"
            )
        (grads,) = torch.autograd.grad(scores.float().sum(), tap.output, allow_unused=True)
        if grads is None:
            raise ValueError(
                "the target does not depend on the explained layer (a side branch?); pick a "
                "layer on the path to the output"
            )
        activations, grads = tap.maps().detach(), tap.maps(grads)
    weights = grads.float().mean(dim=(2, 3))
    return activations.float(), weights.detach(), scores.detach().float(), tap.layout


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
