"""Small models trained by this project on its own synthetic data; weights ship in the package.

    model = fw.zoo.reid_net()            # eval mode; weights loaded offline, safetensors
    x = model.preprocess(image)          # uint8 (H,W,3) / PIL → (3,H,W) float tensor
    model.info["metrics"]                # held-out metrics recorded when it was trained

Retrain with ``python -m famwidget.zoo.train NAME`` (deterministic, minutes on a CPU).
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .modern import SEFlowerNet, ViTFlowerNet, ViTReIDNet
from .nets import FlowerNet, ReIDNet, SSLNet

WEIGHTS = pathlib.Path(__file__).parent / "weights"
NAMES = (
    "flower_net",
    "flower_net_double",
    "reid_net",
    "ssl_net",
    "se_flower_net",
    "vit_flower_net",
    "vit_reid_net",
)


@dataclass(frozen=True)
class Preprocess:
    """uint8 image(s) → normalised float tensor: ``(x/255 - mean) / std``, resized to ``size``.

    ``preprocess(image)``: PIL or ``(H,W,3)`` uint8 → ``(3,H,W)``; ``preprocess.batch(images)``:
    ``(N,H,W,3)`` uint8 → ``(N,3,H,W)``.
    """

    size: tuple[int, int]
    mean: float = 0.5
    std: float = 0.25

    def __call__(self, image: Any) -> Tensor:
        from ..explanation import to_uint8_rgb

        return self.batch(to_uint8_rgb(image)[None])[0]

    def batch(self, images: np.ndarray) -> Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
        if tuple(x.shape[-2:]) != tuple(self.size):
            x = torch.nn.functional.interpolate(
                x, size=self.size, mode="bilinear", align_corners=False, antialias=True
            )
        return (x - self.mean) / self.std

    def undo(self, x: Tensor) -> np.ndarray:
        """``(N,3,H,W)`` normalised → ``(N,H,W,3)`` uint8 (for display)."""
        rgb = (x.detach().cpu().float() * self.std + self.mean).clamp(0, 1)
        return (rgb.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def build(name: str) -> tuple[nn.Module, Preprocess]:
    """A fresh, untrained model of zoo entry ``name`` and its preprocess."""
    if name == "flower_net":
        return FlowerNet(6), Preprocess((112, 112))
    if name == "flower_net_double":
        return FlowerNet(12), Preprocess((112, 112))
    if name == "reid_net":
        return ReIDNet(), Preprocess((128, 64))
    if name == "ssl_net":
        return SSLNet(), Preprocess((112, 112))
    if name == "se_flower_net":
        return SEFlowerNet(6), Preprocess((64, 64))
    if name == "vit_flower_net":
        return ViTFlowerNet(6), Preprocess((64, 64))
    if name == "vit_reid_net":
        return ViTReIDNet(image=(64, 32), stem="conv", pool="cls"), Preprocess((64, 32))
    raise ValueError(f"unknown zoo model {name!r}; available: {', '.join(NAMES)}")


def load(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """Zoo model ``name`` with its shipped weights, in eval mode, with ``.preprocess``/``.info``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    model, preprocess = build(name)
    path = WEIGHTS / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"the weights of {name} are missing ({path}); train them with "
            f"`python -m famwidget.zoo.train {name}`"
        )
    model.load_state_dict(load_file(str(path)))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    model.info = {k: json.loads(v) for k, v in meta.items()}
    model.preprocess = preprocess
    return model.to(device).eval()


def flower_net(variant: str = "single", device: str | torch.device = "cpu") -> nn.Module:
    """Flower classifier (6 petal colours, or 12 petal x centre colours with "double")."""
    if variant not in ("single", "double"):
        raise ValueError(f"variant must be 'single' or 'double', not {variant!r}")
    return load("flower_net" if variant == "single" else "flower_net_double", device)


def reid_net(device: str | torch.device = "cpu") -> nn.Module:
    """Person re-identification embedding net (identity + triplet loss, cosine retrieval)."""
    return load("reid_net", device)


def ssl_net(device: str | torch.device = "cpu") -> nn.Module:
    """Self-supervised backbone (SimCLR on flowers, no labels)."""
    return load("ssl_net", device)


def se_flower_net(device: str | torch.device = "cpu") -> nn.Module:
    """Squeeze-excitation MBConv CNN (depthwise convs, SiLU, SE gates, BatchNorm) on the flowers."""
    return load("se_flower_net", device)


def vit_flower_net(device: str | torch.device = "cpu") -> nn.Module:
    """Small vision transformer (patch 8 at 64 px, class token, 4 blocks) on the flowers."""
    return load("vit_flower_net", device)


def vit_reid_net(device: str | torch.device = "cpu") -> nn.Module:
    """Small vision transformer re-ID net (conv stem, 8x8 patches at 64x32, class token)."""
    return load("vit_reid_net", device)


__all__ = [
    "Preprocess",
    "build",
    "flower_net",
    "load",
    "reid_net",
    "se_flower_net",
    "ssl_net",
    "vit_flower_net",
    "vit_reid_net",
]
