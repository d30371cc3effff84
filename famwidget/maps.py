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


def minmax(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Rescale each map of ``(B,...,h,w)`` to [0,1] over its last two dims; a constant map → 0."""
    x = maps.float()
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    out = (x - lo) / span.clamp_min(eps)
    return torch.where(span > eps, out, torch.zeros_like(out))


def cam(activations: Tensor, weights: Tensor, size: tuple[int, int]) -> Tensor:
    """``minmax(U(ReLU(sum_k w_k A_k)))``: ``(B,K,h,w)`` and ``(B,K)`` give ``(B,H,W)`` in [0,1]."""
    combined = torch.einsum("bk,bkhw->bhw", weights.float(), activations.float())
    return minmax(upsample(torch.relu(combined), size))


def gaussian_kernel(sigma: float, device: torch.device | str = "cpu") -> Tensor:
    """Normalised 1-D Gaussian ``(2r+1,)`` with ``r = ceil(3 sigma)``, float32."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()
