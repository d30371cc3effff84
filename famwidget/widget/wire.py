"""The wire format: what crosses from the kernel to the browser, as compact binary buffers.

Heatmaps, images and activation stacks are raw uint8 bytes (row-major), never JSON number lists;
the small metadata (shapes, per-channel scales, channel ids and weights) is plain JSON. The
frontend decodes them in ``js/buffers.js`` and ``js/channels.js``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

#: channels of the activation stack sent per explanation (ranked by |weight| x mean activation)
TOP_CHANNELS = 32
#: Colab drops comm messages over 1 MB: every message stays under this many bytes
MESSAGE_LIMIT = 900_000
#: the longer side of the image shown (and of its heatmap) at most, in pixels
MAX_SIDE = 512
#: the bytes all thumbnails may take together in the widget's opening message
THUMBS_BUDGET = 400_000


DTYPES = {"uint8": np.dtype("u1"), "uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}
"""The dtypes a buffer may hold (little-endian), by the name the frontend's decoder uses."""


def decode(data: bytes, shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
    """The array ``shape`` of ``dtype`` that ``data`` holds (what ``js/buffers.js``
    ``decodeArray`` does in the browser); a length that does not match is refused."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, not {dtype!r}")
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in shape):
        raise ValueError(f"shape must be a tuple of ints >= 0, got {shape!r}")
    need = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
    if len(data) != need:
        raise ValueError(
            f"a {dtype} buffer of shape {tuple(shape)} has {need} bytes, this one {len(data)}"
        )
    return np.frombuffer(data, DTYPES[dtype]).reshape(shape)


def encode_heatmap(heatmap: Tensor) -> bytes:
    """``(H,W)`` float in [0,1] → H*W uint8 bytes (value * 255, rounded; values outside
    [0,1] are clipped). NaN/Inf or another rank is refused (the map would be unreadable)."""
    if not isinstance(heatmap, Tensor) or heatmap.dim() != 2 or not heatmap.is_floating_point():
        got = tuple(heatmap.shape) if isinstance(heatmap, Tensor) else type(heatmap).__name__
        raise ValueError(f"a heatmap to send must be a float tensor (H,W), got {got}")
    h = heatmap.detach().float().cpu()
    if not bool(torch.isfinite(h).all()):
        bad = int((~torch.isfinite(h)).sum())
        raise ValueError(f"the heatmap has {bad} NaN/Inf value(s) of {h.numel()}: not sent")
    return (h.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy().tobytes()


def encode_image(rgb: np.ndarray) -> bytes:
    """``(H,W,3)`` uint8 → H*W*3 bytes."""
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.dtype != np.uint8
        or rgb.ndim != 3
        or (rgb.shape[2] != 3)
    ):
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected an (H,W,3) uint8 image, got {got}")
    return np.ascontiguousarray(rgb).tobytes()


def encode_channels(
    activations: Tensor | None,
    weights: Tensor | None,
    top: int = TOP_CHANNELS,
    ids: list[int] | None = None,
    names: list[str] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The top channels of one image's stack ``(K,h,w)`` with weights ``(K,)``.

    Returns the uint8 bytes ``(k,h,w)`` and ``{k, h, w, ids, weights, lo, scale}``: channel
    ``c`` decodes as ``lo[c] + byte * scale[c]``. ``ids`` numbers the channels (default
    0..K-1); ``names``, if given, labels them (e.g. "layer3:17" for the interpretation method).
    """
    if activations is None or weights is None:
        empty: dict[str, Any] = {"k": 0, "h": 0, "w": 0, "ids": [], "weights": [], "lo": []}
        return b"", {**empty, "scale": [], "names": []}
    a = activations.detach().float().cpu()
    w = weights.detach().float().cpu()
    if a.dim() != 3 or w.shape != (a.shape[0],):
        raise ValueError(
            f"channels to send must be activations (K,h,w) with weights (K,), got "
            f"{tuple(a.shape)} and {tuple(w.shape)}"
        )
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(w).all())):
        raise ValueError("the activations or weights to send hold NaN/Inf values")
    k_all = a.shape[0]
    rank = (w.abs() * a.mean(dim=(1, 2)).abs()).argsort(descending=True)[: min(top, k_all)]
    a, w = a[rank], w[rank]
    order = rank.tolist()
    numbers = order if ids is None else [ids[i] for i in order]
    lo = a.amin(dim=(1, 2))
    scale = (a.amax(dim=(1, 2)) - lo) / 255
    q = ((a - lo[:, None, None]) / scale.clamp_min(1e-12)[:, None, None] + 0.5).clamp(0, 255)
    info = {
        "k": int(a.shape[0]),
        "h": int(a.shape[1]),
        "w": int(a.shape[2]),
        "ids": [int(i) for i in numbers],
        "names": [f"#{i}" for i in numbers] if names is None else [names[i] for i in order],
        "weights": [float(v) for v in w],
        "lo": [float(v) for v in lo],
        "scale": [float(v) for v in scale],
    }
    return q.to(torch.uint8).numpy().tobytes(), info


def thumbnails(images: np.ndarray, height: int = 64) -> tuple[bytes, dict[str, Any]]:
    """``(N,H,W,3)`` uint8 → the thumbnails' bytes ``(N,h,w,3)`` and ``{n, h, w}``.

    Large galleries get smaller thumbnails, so that all of them stay within THUMBS_BUDGET.
    """
    n, H, W, _ = images.shape
    fit = int((THUMBS_BUDGET / max(n * 3 * W / H, 1e-9)) ** 0.5)
    th = max(8, min(height, H, fit))
    tw = max(1, round(W * th / H))
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    small = (
        torch.nn.functional.interpolate(t, size=(th, tw), mode="area") if (th, tw) != (H, W) else t
    )
    out = (small + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return out.tobytes(), {"n": int(n), "h": int(th), "w": int(tw)}


def encode_points(points: Tensor | None) -> bytes:
    """Fixations ``(N,2)`` int (y, x) → N*2 little-endian uint16 (y0, x0, y1, x1, ...)."""
    if points is None or len(points) == 0:
        return b""
    p = points.detach().cpu().numpy()
    if p.ndim != 2 or p.shape[1] != 2 or not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"fixation points must be (N,2) integers (y, x), got {p.dtype} {p.shape}")
    if p.min() < 0 or p.max() > np.iinfo(np.uint16).max:
        raise ValueError("fixation points must lie in 0..65535")
    return p.astype("<u2").tobytes()


def fit_side(h: int, w: int, limit: int = MAX_SIDE) -> tuple[int, int]:
    """``(h, w)`` scaled down (aspect kept) so that the longer side is at most ``limit``."""
    scale = min(1.0, limit / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_map(heatmap: Tensor, size: tuple[int, int]) -> Tensor:
    """``(H,W)`` map → ``size`` (bilinear); unchanged when the size is already right."""
    if tuple(heatmap.shape) == tuple(size):
        return heatmap
    return torch.nn.functional.interpolate(
        heatmap[None, None].float(), size=size, mode="bilinear", align_corners=False
    )[0, 0]
