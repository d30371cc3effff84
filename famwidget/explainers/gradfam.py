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

from ..explanation import Explanation
from ..maps import cam
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
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward and backward once: activations ``(B,K,h,w)``, weights ``(B,K)``, scores ``(B,)``."""
    x = images.detach().clone().requires_grad_(True)
    with preserved(model), Tap(module) as tap, torch.enable_grad():
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            output = model(x)
            bound = target.bind(output, output_key)
            scores = bound.scalar(output)
        if tap.output is None:
            raise ValueError("the explained layer did not run in the model's forward pass")
        activations = tap.output
        if not scores.requires_grad:
            raise ValueError(
                f"the target {target!r} does not depend on the model output through autograd "
                "(a detached or constant score); a target must return a differentiable (B,) tensor"
            )
        (grads,) = torch.autograd.grad(scores.float().sum(), activations, allow_unused=True)
        if grads is None:
            raise ValueError(
                "the target does not depend on the explained layer (a side branch?); pick a "
                "layer on the path to the output"
            )
    weights = grads.float().mean(dim=(2, 3))
    return activations.detach().float(), weights.detach(), scores.detach().float()


def grad_fam(
    model: nn.Module,
    images: Tensor,
    *,
    layer: str,
    module: nn.Module,
    target: Target,
    output_key: OutputKey = None,
    autocast: torch.dtype | None = None,
    method: str = "grad-fam",
) -> Explanation:
    """Grad-FAM / Grad-CAM of ``images`` ``(B,C,H,W)``: an Explanation, heatmap ``(B,H,W)``."""
    activations, weights, scores = gradient_weights(
        model, images, module, target, output_key, autocast
    )
    heatmap = cam(activations, weights, tuple(images.shape[-2:]))
    return Explanation(
        heatmap=heatmap,
        method=method,
        layer=layer,
        target=repr(target),
        activations=activations,
        weights=weights,
        scores=scores,
        options={"autocast": None if autocast is None else str(autocast)},
    )


grad_cam = partial(grad_fam, method="grad-cam")
"""Grad-CAM: :func:`grad_fam` with a class target (default ``Predicted()``)."""


METHODS = [
    Method("grad-fam", grad_fam, Embedding, summary="gradients of ||f(x)||"),
    Method("grad-cam", grad_cam, Predicted, summary="gradients of a class logit"),
]
