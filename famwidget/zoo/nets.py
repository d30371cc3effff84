"""The architectures of the zoo: small CNNs that train on a CPU in minutes.

Each net names its parts so that ``layer=`` reads naturally: ``features`` (the last spatial
layer, what the explainers tap by default), ``features.N`` (the blocks), ``embedding``/``head``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) → BatchNorm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FlowerNet(nn.Module):
    """Classifier for ``fw.data.flowers``: ``(B,3,112,112)`` → logits ``(B,C)``.

    ``features`` ends at 14x14 with 128 channels; global average pool; linear head.
    """

    def __init__(self, n_classes: int = 6, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(3, w, 2),  # 56
            conv_bn(w, w, 2),  # 28
            conv_bn(w, 2 * w),
            conv_bn(2 * w, 4 * w, 2),  # 14
            conv_bn(4 * w, 4 * w),
        )
        self.head = nn.Linear(4 * w, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))

    def embed(self, x: Tensor) -> Tensor:
        """The pooled features ``(B,4w)`` (before the head)."""
        return self.features(x).mean(dim=(2, 3))


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 projection on the skip path when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ReIDNet(nn.Module):
    """Embedding net for ``fw.data.persons``: ``(B,3,128,64)`` → L2-free embedding ``(B,D)``.

    A small ResNet: stem, three basic blocks (``features``, ending at 16x8), global average
    pool, and a BatchNorm "neck" whose output is the embedding compared by cosine similarity.
    """

    def __init__(self, dim: int = 128, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(3, w, 2),  # 64x32
            BasicBlock(w, 2 * w, 2),  # 32x16
            BasicBlock(2 * w, 4 * w, 2),  # 16x8
            BasicBlock(4 * w, dim),
        )
        self.embedding = nn.BatchNorm1d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.embedding(self.features(x).mean(dim=(2, 3)))


class SSLNet(nn.Module):
    """Self-supervised backbone (SimCLR on flowers, no labels): ``(B,3,112,112)`` → ``(B,D)``.

    The same trunk as :class:`FlowerNet`; the projection head used in training is not part of
    the shipped model, as usual for SimCLR: the backbone's pooled features are the representation.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = FlowerNet(1, width).features
        self.dim = 4 * w

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))


class ProjectionHead(nn.Module):
    """SimCLR projection ``(B,D)`` → normalised ``(B,P)``; used in training only."""

    def __init__(self, dim: int, out: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, out))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["FlowerNet", "ProjectionHead", "ReIDNet", "SSLNet", "count_parameters", "torch"]
