"""Small operations on saliency maps shared by every method.

All maps are upcast to float32 before resizing and normalising (autocast may hand in bf16/fp16).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (``align_corners=False``) of ``(B,h,w)`` / ``(B,K,h,w)`` maps to ``size``."""
    squeeze = maps.dim() == 3
    x = maps.float()[:, None] if squeeze else maps.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[:, 0] if squeeze else x


RELATIVE_EPS = 1e-5
"""A map is constant when ``max - min <= 1e-5 * max|map|`` (float32 rounding is about 1e-7).

Relative, so the test does not depend on the scale of the model's numbers: a map whose values
are all about 1e-13 (random-weight EfficientNet, a last layer scaled by 1e-13) is normalised
like the same map at 1."""


def minmax(maps: Tensor, eps: float = RELATIVE_EPS) -> Tensor:
    """Rescale each map of ``(B,...,h,w)`` to [0,1] over its last two dims; a constant map → 0.

    Constant means ``max - min <= eps * max(|max|, |min|)`` (relative: scale-free), or all zero.
    """
    x = maps.float()
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    flat = ~(span > eps * torch.maximum(hi.abs(), lo.abs()))
    out = (x - lo) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.zeros_like(out), out)


def is_constant(maps: Tensor, eps: float = RELATIVE_EPS) -> Tensor:
    """``(B,...)`` bool: which maps of ``(B,...,h,w)`` are constant in :func:`minmax`'s sense."""
    x = maps.float()
    lo, hi = x.amin(dim=(-2, -1)), x.amax(dim=(-2, -1))
    return ~(hi - lo > eps * torch.maximum(hi.abs(), lo.abs()))


def weighted_sum(activations: Tensor, weights: Tensor) -> Tensor:
    """``sum_k w_k A_k``: ``(B,K,h,w)`` and ``(B,K)`` give ``(B,h,w)`` float32."""
    return torch.einsum("bk,bkhw->bhw", weights.float(), activations.float())


def cam(activations: Tensor, weights: Tensor, size: tuple[int, int]) -> Tensor:
    """``minmax(U(ReLU(sum_k w_k A_k)))``: ``(B,K,h,w)`` and ``(B,K)`` give ``(B,H,W)`` in [0,1]."""
    return minmax(upsample(torch.relu(weighted_sum(activations, weights)), size))


def cam_reasons(activations: Tensor, weights: Tensor) -> list[str | None]:
    """Why each CAM map of :func:`cam` is constant (one reason per image), or None where it is not.

    In the order they are checked: non-finite numbers; a dead layer (every channel constant over
    the grid); every weight zero; a weighted sum that is negative or zero everywhere (the ReLU
    leaves nothing); any other constant map.
    """
    acts, w = activations.float(), weights.float()
    combined = weighted_sum(acts, w)
    relu = torch.relu(combined)
    reasons: list[str | None] = []
    for b in range(acts.shape[0]):
        if not (bool(torch.isfinite(acts[b]).all()) and bool(torch.isfinite(w[b]).all())):
            reasons.append("the layer's activations or the channel weights are not finite")
        elif bool(is_constant(acts[b]).all()):
            reasons.append(
                "a dead layer: every channel of the explained layer is constant over the grid"
            )
        elif not bool((w[b] != 0).any()):
            reasons.append("every channel weight is zero: the target does not vary with the layer")
        elif not bool((relu[b] > 0).any()):
            reasons.append(
                "the weighted sum of the channels is negative or zero everywhere, so the ReLU "
                "leaves an all-zero map: no location increases the target"
            )
        elif bool(is_constant(relu[b])):
            reasons.append("the weighted sum of the channels is constant over the grid")
        else:
            reasons.append(None)
    return reasons


def gaussian_kernel(sigma: float, device: torch.device | str = "cpu") -> Tensor:
    """Normalised 1-D Gaussian ``(2r+1,)`` with ``r = ceil(3 sigma)``, float32."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()
