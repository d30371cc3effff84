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


@dataclass(frozen=True)
class ReIDDemo:
    """A query, a gallery with identities, and the shipped re-ID net (for ``fw.ReIDExplorer``)."""

    model: nn.Module
    query: torch.Tensor  # (3,H,W)
    query_display: np.ndarray  # (H,W,3) uint8
    query_id: int
    gallery: torch.Tensor  # (N,3,H,W)
    display: np.ndarray  # (N,H,W,3) uint8
    ids: list[int]
    description: str


def reid_demo(n: int = 12, query: int = 0) -> ReIDDemo:
    """Pedestrians of identities the re-ID net never saw: a query and a mixed gallery.

    The gallery holds every other image of the query's identity (other cameras and poses) and
    fills up with images of other identities; the Explorer ranks it by cosine similarity.
    """
    from .zoo import heldout, reid_net

    model = reid_net()
    test = heldout.person_split(train=False)
    q_id = int(np.unique(test.ids)[query])
    same = np.flatnonzero(test.ids == q_id)
    others = np.flatnonzero(test.ids != q_id)
    rng = np.random.default_rng(query)
    matches = same[1 : 1 + max(1, n // 3)]
    fill = rng.choice(others, size=n - len(matches), replace=False)
    chosen = np.concatenate([matches, fill])
    x = model.preprocess.batch(test.images)
    return ReIDDemo(
        model,
        x[same[0]],
        test.images[same[0]],
        q_id,
        x[chosen],
        test.images[chosen],
        test.ids[chosen].tolist(),
        "reid_net (trained by famwidget on synthetic pedestrians) explaining why gallery images "
        "match a query of an identity it never saw in training",
    )


def demo_gallery(n: int = 12) -> DemoGallery:
    """Real photos with an untrained ResNet-18 (the classifier-free photo gallery)."""
    return photo_gallery(n)
