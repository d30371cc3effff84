"""The demo gallery: what ``famwidget demo`` and the quickstart notebook explain by default."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class DemoGallery:
    """A model with images to explain: inputs ``(B,3,H,W)``, shown ``(B,H,W,3)`` uint8."""

    model: nn.Module
    images: torch.Tensor
    display: np.ndarray
    labels: list[str]
    description: str


def photo_gallery(n: int = 12, size: int = 224) -> DemoGallery:
    """Real photos (shipped in scikit-image / scikit-learn) with a ResNet-18.

    The ResNet-18 has random weights: pretrained ones cannot be downloaded here, so its maps show
    what an untrained network's features respond to (edges and texture), not learnt objects.
    """
    import torchvision
    from PIL import Image

    from .data import photos

    pictures = list(photos().items())[:n]
    display = np.stack([_square(np.asarray(Image.fromarray(rgb)), size) for _, rgb in pictures])
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    images = (torch.from_numpy(display).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return DemoGallery(
        model,
        images,
        display,
        [name for name, _ in pictures],
        "ResNet-18 with random weights (untrained: no weights can be downloaded here) on real "
        "photos shipped with scikit-image and scikit-learn",
    )


def _square(rgb: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(rgb[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def demo_gallery(n: int = 12) -> DemoGallery:
    """The default gallery: the shipped re-ID model on synthetic pedestrians when available."""
    return photo_gallery(n)
