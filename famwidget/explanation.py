"""The Explanation record: what every method returns, and its conversions (NumPy, PIL overlay).

The widget only ever sees Explanations; the wire encoding lives in ``famwidget.widget.wire``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor


@dataclass(frozen=True)
class Explanation:
    """One method's explanation of a batch of B images of size H x W.

    Attributes:
        heatmap: ``(B,H,W)`` float32 in [0,1].
        method, layer, target: what was run (strings).
        activations: ``(B,K,h,w)`` the explained layer's output, where the method has one.
        weights: ``(B,K)`` the weight of each channel in the map, where the method has them.
        points: fixations, one ``(N_i,2)`` int tensor of (y, x) pixels per image.
        scores: ``(B,)`` the target's value on each clean image.
        features: for the interpretation method, ``[(layer, channel, relevance), ...]`` per image.
        options: the method's options as run.
        layout: how the explained layer's output was read: ``"nchw"``, ``"nhwc"`` or ``"tokens"``
            (``options["grid"]`` and ``options["prefix_tokens"]`` give the details).
        degenerate: ``None`` when every map is fine; otherwise why a map is constant (a dead
            layer, a target that does not vary, every masked score equal, ...), prefixed
            with ``image i:`` in a batch. ``degenerate_images`` has one reason (or None) per image.
    """

    heatmap: Tensor
    method: str
    layer: str
    target: str
    activations: Tensor | None = None
    weights: Tensor | None = None
    points: list[Tensor] | None = None
    scores: Tensor | None = None
    features: list[list[tuple[str, int, float]]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    layout: str | None = None
    degenerate: str | None = None
    degenerate_images: tuple[str | None, ...] | None = None

    def __len__(self) -> int:
        return self.heatmap.shape[0]

    def __getitem__(self, i: int) -> Explanation:
        """The explanation of image ``i`` alone (a batch of one)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image {i} is out of range for an explanation of {n} images")
        i = i % n
        pick = slice(i, i + 1)
        return replace(
            self,
            heatmap=self.heatmap[pick],
            activations=None if self.activations is None else self.activations[pick],
            weights=None if self.weights is None else self.weights[pick],
            points=None if self.points is None else [self.points[i]],
            scores=None if self.scores is None else self.scores[pick],
            features=None if self.features is None else [self.features[i]],
            degenerate=None if self.degenerate_images is None else self.degenerate_images[i],
            degenerate_images=(
                None if self.degenerate_images is None else (self.degenerate_images[i],)
            ),
        )

    def cpu(self) -> Explanation:
        """The same explanation with every tensor moved to the CPU."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().cpu()

        return replace(
            self,
            heatmap=move(self.heatmap),
            activations=move(self.activations),
            weights=move(self.weights),
            points=None if self.points is None else [p.cpu() for p in self.points],
            scores=move(self.scores),
        )

    def numpy(self) -> np.ndarray:
        """The heatmap as a NumPy array ``(B,H,W)`` float32 in [0,1]."""
        return self.heatmap.detach().float().cpu().numpy()

    def overlay(
        self, image: Any, alpha: float = 0.5, cmap: str = "jet", index: int = 0
    ) -> Image.Image:
        """Blend heatmap ``index`` over ``image`` and return an RGB PIL image.

        ``image``: PIL image, ``(H,W,3)`` uint8/float array, or ``(3,H,W)`` float tensor in [0,1].
        ``alpha``: 0 shows the image only, 1 the colour-mapped heatmap only.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        rgb = to_uint8_rgb(image)
        heat = self.heatmap[index].detach().float().cpu()
        if tuple(heat.shape) != rgb.shape[:2]:
            heat = torch.nn.functional.interpolate(
                heat[None, None], size=rgb.shape[:2], mode="bilinear", align_corners=False
            )[0, 0]
        colored = colormap_rgb(heat.clamp(0, 1).numpy(), cmap)
        blend = (1 - alpha) * rgb.astype(np.float32) + alpha * colored.astype(np.float32)
        return Image.fromarray(np.clip(blend + 0.5, 0, 255).astype(np.uint8))


class DegenerateMapWarning(UserWarning):
    """A map is constant for a real reason (the Explanation's ``degenerate`` says which)."""


def flag_degenerate(
    explanation: Explanation, reasons: Sequence[str | None], warn: bool = True
) -> Explanation:
    """The explanation with ``degenerate`` set from one reason (or None) per image.

    ``warn``: also ``warnings.warn`` the reason (category :class:`DegenerateMapWarning`), so a
    blank map never goes unnoticed.
    """
    per_image = tuple(reasons)
    bad = [(i, r) for i, r in enumerate(per_image) if r]
    if not bad:
        return replace(explanation, degenerate=None, degenerate_images=per_image)
    text = bad[0][1] if len(per_image) == 1 else "; ".join(f"image {i}: {r}" for i, r in bad)
    if warn:
        warnings.warn(
            f"{explanation.method} at {explanation.layer!r} gives a constant map: {text}",
            DegenerateMapWarning,
            stacklevel=4,
        )
    return replace(explanation, degenerate=text, degenerate_images=per_image)


def colormap_rgb(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Map ``(H,W)`` values in [0,1] to ``(H,W,3)`` uint8 with a matplotlib colormap."""
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(
            f"unknown colormap {cmap!r}; e.g. jet, turbo, viridis, inferno, gray"
        ) from None
    return (colormap(values)[..., :3] * 255 + 0.5).astype(np.uint8)


def to_uint8_rgb(image: Any) -> np.ndarray:
    """Any of PIL / ``(H,W,3)`` array / ``(3,H,W)`` tensor in [0,1] → ``(H,W,3)`` uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, Tensor):
        t = image.detach().float().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"an image tensor must be (3,H,W), got {tuple(image.shape)}")
        t = t.expand(3, -1, -1) if t.shape[0] == 1 else t
        return (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"an image array must be (H,W,3), got {image.shape}")
        a = a[..., :3]
        if a.dtype != np.uint8:
            a = (np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
        return np.ascontiguousarray(a)
    raise TypeError(
        "image must be a PIL image, an (H,W,3) array or a (3,H,W) tensor, "
        f"not {type(image).__name__}"
    )
