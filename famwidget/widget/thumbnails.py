"""The gallery's thumbnails: all in the opening message for small galleries, in pages on demand
for large ones.

A gallery of up to :data:`INLINE_MAX` images sends every thumbnail in the ``thumbs`` trait
(``wire.thumbnails``: they shrink so that all fit ``wire.THUMBS_BUDGET``). A larger one keeps
its thumbnails at :data:`PAGED_HEIGHT` pixels and sends none up front: the ``gallery`` trait
says ``paged: true`` and ``page_size``, the browser asks for the pages its visible rows need
with ``{"type": "thumbs", "page": p}``, and the kernel answers each with ONE custom message
``{"type": "thumbs", "page": p, "start": s, "count": c, "h": h, "w": w}`` whose one binary
buffer holds the ``c`` thumbnails ``(c,h,w,3)`` uint8, row-major (always under
``wire.MESSAGE_LIMIT``). Pages are made when first asked for and kept (bounded: 10,000
thumbnails of 64x32 take 61 MB).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import wire

#: galleries of at most this many images send all their thumbnails in the opening message
INLINE_MAX = 512
#: the height of a paged gallery's thumbnails (pixels; never above the images' own)
PAGED_HEIGHT = 64
#: the bytes of one page of thumbnails at most (one message each)
PAGE_BYTES = 480_000
#: thumbnails per page at most
PAGE_MAX = 256


class Thumbnails:
    """The thumbnails of ``shown`` ``(N,H,W,3)`` uint8, inline or in pages (module docstring)."""

    def __init__(self, shown: np.ndarray, inline_max: int | None = None) -> None:
        if shown.dtype != np.uint8 or shown.ndim != 4 or shown.shape[3] != 3:
            raise ValueError(
                f"thumbnails need (N,H,W,3) uint8 images, got {shown.dtype} {shown.shape}"
            )
        self._shown = shown
        n, H, W, _ = shown.shape
        self.n = int(n)
        self.paged = self.n > (INLINE_MAX if inline_max is None else inline_max)
        if self.paged:
            self.h = max(1, min(PAGED_HEIGHT, int(H)))
            self.w = max(1, round(W * self.h / H))
            per = self.h * self.w * 3
            self.page_size = max(1, min(PAGE_MAX, PAGE_BYTES // per))
            self._inline = b""
        else:
            self._inline, info = wire.thumbnails(shown)
            self.h, self.w = info["h"], info["w"]
            self.page_size = self.n
        self._pages: dict[int, bytes] = {}

    @property
    def pages(self) -> int:
        """How many pages the gallery has (1 when inline)."""
        return max(1, -(-self.n // self.page_size))

    def opening(self) -> tuple[bytes, dict[str, Any]]:
        """The ``thumbs`` bytes and ``gallery`` info sent with the widget: ``{n, h, w}`` and,
        when paged, ``paged: True, page_size, pages`` (then no bytes)."""
        info: dict[str, Any] = {"n": self.n, "h": self.h, "w": self.w}
        if self.paged:
            info.update(paged=True, page_size=self.page_size, pages=self.pages)
        return self._inline, info

    def page(self, page: int) -> tuple[dict[str, Any], bytes]:
        """The answer to a page request: its message content and its one buffer."""
        if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page < self.pages:
            raise ValueError(
                f"thumbnail page must be an int in 0..{self.pages - 1} (this gallery has "
                f"{self.n} images, {self.page_size} a page), got {page!r}"
            )
        start = page * self.page_size
        count = min(self.page_size, self.n - start)
        if page not in self._pages:
            if self.paged:
                self._pages[page] = _shrink(self._shown[start : start + count], self.h, self.w)
            else:
                self._pages[page] = self._inline
        content = {
            "type": "thumbs",
            "page": page,
            "start": start,
            "count": count,
            "h": self.h,
            "w": self.w,
        }
        return content, self._pages[page]

    def all_bytes(self) -> bytes:
        """Every thumbnail ``(N,h,w,3)`` in one buffer (what an offline page embeds once)."""
        if not self.paged:
            return self._inline
        return b"".join(self.page(p)[1] for p in range(self.pages))


def _shrink(images: np.ndarray, h: int, w: int) -> bytes:
    """``(n,H,W,3)`` uint8 → ``(n,h,w,3)`` uint8 bytes (area averaging)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    if tuple(t.shape[-2:]) != (h, w):
        t = torch.nn.functional.interpolate(t, size=(h, w), mode="area")
    return (
        (t + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy().tobytes()
    )
