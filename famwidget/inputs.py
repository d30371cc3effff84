"""Checks of what the caller passes in: images and the model's device."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_images(images: Any) -> Tensor:
    """``(B,C,H,W)`` or ``(C,H,W)`` float tensor → ``(B,C,H,W)``; anything else: a clear error."""
    if not isinstance(images, Tensor):
        raise TypeError(
            f"images must be a float tensor (B,3,H,W) or (3,H,W), already preprocessed for the "
            f"model, not {type(images).__name__}; use the model's preprocess on PIL/NumPy images"
        )
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4:
        raise ValueError(f"images must be (B,3,H,W) or (3,H,W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be a floating tensor (preprocessed), got {images.dtype}; "
            "convert uint8 images with the model's preprocess or images.float() / 255"
        )
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B=0)")
    return images
