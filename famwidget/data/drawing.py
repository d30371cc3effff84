"""Vectorised drawing primitives shared by the synthetic datasets, and :class:`SyntheticSet`.

All shape tests work on a whole batch at once. Coordinates are pixel centres: ``x`` is the
column, ``y`` the row, both as floats. Every per-image parameter is an array of shape ``(N,)``.
Shapes are tested with separable broadcasting: ``dx = x - cx`` has shape ``(N, 1, W)`` and
``dy = y - cy`` has shape ``(N, H, 1)``, so only a handful of full ``(N, H, W)`` operations
are needed per primitive.

Only numpy is used here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

F32 = np.float32


@dataclass(frozen=True, eq=False)
class SyntheticSet:
    """A synthetic image set with exact ground-truth masks.

    Attributes:
        images: uint8 ``(N, H, W, 3)`` RGB images.
        labels: int64 ``(N,)`` class (flowers) or identity (persons) indices.
        masks: bool ``(N, H, W)``; True exactly on the visible pixels of the discriminative
            parts (the parts whose colour/pattern defines the label).
        classes: human-readable name of every label value (``len(classes)`` classes).
        part_masks: part name -> bool ``(N, H, W)`` visible pixels of that part; the parts
            are disjoint and every non-background pixel belongs to exactly one part.
        ids: int64 ``(N,)`` identity ids (persons; equal to ``labels``), None for flowers.
        cams: int64 ``(N,)`` camera ids (persons), None for flowers.
        discriminative: names of the parts whose union is ``masks``.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    classes: list[str]
    part_masks: dict[str, np.ndarray] = field(default_factory=dict)
    ids: np.ndarray | None = None
    cams: np.ndarray | None = None
    discriminative: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes (or identities)."""
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def __getitem__(self, index: Any) -> Any:
        """``ds[i]`` -> ``(image (H,W,3), label, mask (H,W))``; slices/arrays -> a sub-set."""
        if isinstance(index, (int, np.integer)):
            return self.images[index], int(self.labels[index]), self.masks[index]
        return self.subset(index)

    def subset(self, index: Any) -> SyntheticSet:
        """New :class:`SyntheticSet` with the images selected by a slice, index or bool array."""
        if isinstance(index, slice):
            pick: Any = index
        else:
            pick = np.asarray(index)
            if pick.dtype != bool:
                pick = pick.astype(np.int64).reshape(-1)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[pick]

        return replace(
            self,
            images=self.images[pick],
            labels=self.labels[pick],
            masks=self.masks[pick],
            part_masks={k: v[pick] for k, v in self.part_masks.items()},
            ids=take(self.ids),
            cams=take(self.cams),
        )

    def tensors(self) -> tuple[Any, Any, Any]:
        """Torch tensors ``(images float32 (N,3,H,W) in [0,1], labels int64 (N,), masks bool
        (N,H,W))``. Imports torch lazily."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(self.images)).permute(0, 3, 1, 2)
        x = x.contiguous().float().div_(255.0)
        y = torch.from_numpy(self.labels.astype(np.int64))
        m = torch.from_numpy(np.ascontiguousarray(self.masks))
        return x, y, m


def col(p: np.ndarray | float, n: int | None = None) -> np.ndarray:
    """Per-image parameter ``(N,)`` (or scalar) -> float32 ``(N, 1, 1)`` for broadcasting."""
    a = np.asarray(p, dtype=F32)
    if a.ndim == 0:
        a = np.full(1 if n is None else n, a, dtype=F32)
    return a.reshape(-1, 1, 1)


def offsets(h: int, w: int, cy: np.ndarray, cx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Separable offsets of every pixel centre from ``(cy, cx)``.

    Returns ``dy`` of shape ``(N, H, 1)`` and ``dx`` of shape ``(N, 1, W)``.
    """
    ys = np.arange(h, dtype=F32).reshape(1, h, 1) + F32(0.5)
    xs = np.arange(w, dtype=F32).reshape(1, 1, w) + F32(0.5)
    return ys - col(cy), xs - col(cx)


def ellipse(
    h: int,
    w: int,
    cy: np.ndarray,
    cx: np.ndarray,
    ry: np.ndarray,
    rx: np.ndarray,
    angle: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Filled rotated ellipses, bool ``(N, H, W)``.

    ``rx`` is the semi-axis along direction ``angle`` (radians, measured from the +x axis
    towards +y, i.e. clockwise on screen), ``ry`` the perpendicular semi-axis.
    """
    dy, dx = offsets(h, w, cy, cx)
    n = dy.shape[0]
    ang = col(angle, n)
    ux, uy = np.cos(ang), np.sin(ang)
    ia = F32(1.0) / np.maximum(col(rx), F32(1e-3)) ** 2
    ib = F32(1.0) / np.maximum(col(ry), F32(1e-3)) ** 2
    qa = ux * ux * ia + uy * uy * ib
    qb = F32(2.0) * ux * uy * (ia - ib)
    qc = uy * uy * ia + ux * ux * ib
    q = qa * dx + qb * dy  # full (N, H, W)
    q *= dx
    q += qc * dy * dy
    return q <= 1.0


def band(
    h: int,
    w: int,
    y0: np.ndarray,
    x0: np.ndarray,
    y1: np.ndarray,
    x1: np.ndarray,
    half_width: np.ndarray,
    bend: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Thick (optionally bent) segment from ``(y0, x0)`` to ``(y1, x1)``, bool ``(N, H, W)``.

    Pixels whose along-axis coordinate lies in ``[0, L]`` and whose distance to the axis is at
    most ``half_width``. ``bend`` (pixels) displaces the axis sideways by
    ``4 * bend * t * (1 - t)`` at relative position ``t``, giving a gentle curve.
    Ends are flat (use :func:`capsule` for round ends).
    """
    dy, dx = offsets(h, w, y0, x0)
    vy, vx = col(y1) - col(y0), col(x1) - col(x0)
    length = np.maximum(np.sqrt(vx * vx + vy * vy), F32(1e-3))
    ux, uy = vx / length, vy / length
    along = ux * dx + uy * dy  # full
    across = ux * dy - uy * dx  # full
    n = dy.shape[0]
    b = col(bend, n)
    if np.any(b != 0):
        t = along / length
        across -= F32(4.0) * b * t * (F32(1.0) - t)
    inside = np.abs(across) <= col(half_width)
    inside &= along >= 0
    inside &= along <= length
    return inside


def capsule(
    h: int,
    w: int,
    y0: np.ndarray,
    x0: np.ndarray,
    y1: np.ndarray,
    x1: np.ndarray,
    radius: np.ndarray,
) -> np.ndarray:
    """Segment with round caps (all points within ``radius`` of it), bool ``(N, H, W)``."""
    dy, dx = offsets(h, w, y0, x0)
    vy, vx = col(y1) - col(y0), col(x1) - col(x0)
    l2 = np.maximum(vx * vx + vy * vy, F32(1e-6))
    t = (vx / l2) * dx + (vy / l2) * dy
    np.clip(t, 0.0, 1.0, out=t)
    ey = dy - t * vy
    ex = dx - t * vx
    ey *= ey
    ex *= ex
    ey += ex
    r = col(radius)
    return ey <= r * r


def box(
    h: int,
    w: int,
    cy: np.ndarray,
    cx: np.ndarray,
    half_h: np.ndarray,
    half_w: np.ndarray,
    angle: np.ndarray | float | None = None,
) -> np.ndarray:
    """Filled (optionally rotated) rectangles, bool ``(N, H, W)``.

    ``half_w`` is measured along direction ``angle`` (from +x towards +y), ``half_h`` across.
    """
    dy, dx = offsets(h, w, cy, cx)
    if angle is None:
        return (np.abs(dy) <= col(half_h)) & (np.abs(dx) <= col(half_w))
    ang = col(angle, dy.shape[0])
    ux, uy = np.cos(ang), np.sin(ang)
    along = ux * dx + uy * dy
    across = ux * dy - uy * dx
    inside = np.abs(along) <= col(half_w)
    inside &= np.abs(across) <= col(half_h)
    return inside


def paint(pid: np.ndarray, cover: np.ndarray, part: int) -> None:
    """Painter's algorithm step: set ``pid`` (int ``(N, H, W)``) to ``part`` where ``cover``."""
    np.copyto(pid, np.asarray(part, dtype=pid.dtype), where=cover)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV (each in [0, 1], any equal shapes) -> float32 RGB of shape ``shape + (3,)``."""
    h = np.asarray(h, dtype=F32) % F32(1.0)
    s = np.clip(np.asarray(s, dtype=F32), 0.0, 1.0)
    v = np.clip(np.asarray(v, dtype=F32), 0.0, 1.0)
    k = (np.array([5.0, 3.0, 1.0], dtype=F32) + h[..., None] * F32(6.0)) % F32(6.0)
    f = np.clip(np.minimum(k, F32(4.0) - k), 0.0, 1.0)
    return v[..., None] - (v * s)[..., None] * f


def smooth_field(rng: np.random.Generator, n: int, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1], float32 ``(N, H, W)``.

    Uniform random values on a ``(cells+1) x (cells+1)`` lattice, bilinearly interpolated
    (done as two small batched matrix products, so it is cheap).
    """
    g = rng.random((n, cells + 1, cells + 1), dtype=F32)
    return interp_matrix(h, cells) @ g @ interp_matrix(w, cells).T


def interp_matrix(size: int, cells: int) -> np.ndarray:
    """Linear interpolation weights ``(size, cells+1)`` from a lattice to ``size`` pixels."""
    pos = (np.arange(size, dtype=F32) + F32(0.5)) / F32(size) * F32(cells)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, cells - 1)
    t = pos - i0
    m = np.zeros((size, cells + 1), dtype=F32)
    m[np.arange(size), i0] = F32(1.0) - t
    m[np.arange(size), i0 + 1] = t
    return m


def wave(h: int, w: int, freq: np.ndarray, angle: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Plane sinusoid ``sin(freq * (x cos a + y sin a) + phase)``, float32 ``(N, H, W)``.

    ``freq`` in radians per pixel. Uses ``sin(p + q) = sin p cos q + cos p sin q`` so that
    only the separable factors need trigonometric functions.
    """
    dy, dx = offsets(h, w, np.zeros_like(freq), np.zeros_like(freq))
    f, a = col(freq), col(angle)
    px = f * np.cos(a) * dx
    qy = f * np.sin(a) * dy + col(phase)
    out = np.sin(px) * np.cos(qy)
    out += np.cos(px) * np.sin(qy)
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 (rounded, clipped). Works in place on ``img``."""
    img *= F32(255.0)
    img += F32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)
