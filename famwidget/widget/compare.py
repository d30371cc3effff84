"""The compare view: every method the Explorer offers, on one image, side by side.

Computed on demand (the browser's compare button sends ``{"type": "compare", "index": i}``),
in the widget's worker thread like any explanation: each method's explanation goes through
the widget's cache (``Explorer._explained``), so a method compared once shows at once when
picked, and a click or another request supersedes a running comparison (newest wins; Score-FAM
stops between two batches). ``{"type": "compare-cancel"}`` stops it.

The answer is one custom message (always under ``wire.MESSAGE_LIMIT``)::

    {"type": "compare", "index": i, "h": h, "w": w, "layer": ..., "scale": SCALE,
     "cells": [{"method", "caption", "degenerate", "error"}, ...]}

with buffers ``[image (h*w*3 uint8), map of cell 0 (h*w uint8), map of cell 1, ...]`` (a cell
that failed has an empty buffer and its ``error``). While it runs, ``{"type": "compare",
"status": "computing", "index", "done", "total", "method"}`` messages say how far it is; a
cancelled or refused comparison answers ``{"type": "compare", "status": "cancelled" |
"refused", "index", "error"}``.

All maps are drawn on ONE colour scale, :data:`SCALE`: the methods' maps have different units
(gradients, score drops, fixation densities), so each is normalised to its own 0-1 range and
the same colormap and range are used for every cell.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import wire
from .worker import Stale

if TYPE_CHECKING:
    from .explorer import Explorer

#: the longer side of the compare cells' image and maps at most (pixels)
COMPARE_SIDE = 192
#: what the cells' colours mean (the same for every cell)
SCALE = "one colour scale: each map normalised to its own 0-1 (0 = its least, 1 = its most)"


def methods_to_compare(widget: Explorer) -> list[str]:
    """The methods that apply to the widget's model (those its picker offers)."""
    return list(widget.methods)


def request(widget: Explorer, index: int) -> Future | None:
    """Queue the comparison of image ``index`` in the widget's worker (newest request wins).

    Refused (a ``status: refused`` answer, ``None`` returned) while an explanation is being
    computed: a comparison would supersede it and the view would never get its map.
    """
    n = len(widget._inputs)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise ValueError(f"compare needs an image index, an int in 0..{n - 1}, got {index!r}")
    with widget._worker.lock:
        if widget.state == "computing":
            widget.send(
                {
                    "type": "compare",
                    "status": "refused",
                    "index": index,
                    "error": "the view is still being computed: compare when it is ready "
                    "(or cancel it)",
                }
            )
            return None
        future = widget._worker.submit(lambda stale: _run(widget, index, stale))
        widget._pending = future
        widget._comparing = future
    return future


def cancel(widget: Explorer) -> bool:
    """Stop the running comparison (only that: an explanation being computed goes on)."""
    with widget._worker.lock:
        running = getattr(widget, "_comparing", None)
        if running is None or running.done() or widget._pending is not running:
            return False
        widget._pending = widget._worker.submit(lambda stale: None)  # the comparison is stale
        widget._comparing = None
        widget.send(
            {"type": "compare", "status": "cancelled", "index": -1, "error": "comparison cancelled"}
        )
    return True


def _run(widget: Explorer, index: int, stale: Callable[[], bool]) -> dict[str, Any]:
    """Explain ``index`` with every method (cached), then send the one answer."""
    chosen = methods_to_compare(widget)
    rest = widget._key(index)[2:]  # the layer and any variant (ReIDExplorer's pair target)
    cells: list[dict[str, Any]] = []
    maps: list[torch.Tensor | None] = []
    for done, method in enumerate(chosen):
        progress = {
            "type": "compare",
            "status": "computing",
            "index": index,
            "done": done,
            "total": len(chosen),
            "method": method,
        }
        if not widget._worker.publish(stale, lambda p=progress: widget.send(p)):
            raise Stale

        def sink(content: dict, buffers: list, p: dict = progress) -> None:
            # a long method's partial maps are not drawn: only how far it is
            widget.send({**p, "progress": content.get("progress", 0.0)})

        try:
            _, explanation = widget._explained((index, method, *rest), stale, stream=sink)
        except Stale:
            raise
        except Exception as error:  # one method failing leaves the others on screen
            cells.append(
                {
                    "method": method,
                    "caption": method,
                    "degenerate": None,
                    "error": f"{type(error).__name__}: {error}",
                }
            )
            maps.append(None)
            continue
        cells.append(_cell(explanation))
        maps.append(explanation.heatmap[0])
    content, buffers = encode(widget._shown[index], maps, cells, index, widget.layer)
    if not widget._worker.publish(stale, lambda: widget.send(content, buffers)):
        raise Stale
    return content


def _cell(explanation: Any) -> dict[str, Any]:
    """A cell's caption: the method, its target and score, and whether the map is flat."""
    text = f"{explanation.method} · {explanation.target}"
    if explanation.scores is not None:
        text += f" = {float(explanation.scores[0]):.3g}"
    reason = explanation.degenerate
    return {
        "method": explanation.method,
        "caption": text,
        "degenerate": None if not reason else str(reason),
        "error": None,
    }


def encode(
    rgb: np.ndarray,
    maps: list[torch.Tensor | None],
    cells: list[dict[str, Any]],
    index: int,
    layer: str,
    side: int = COMPARE_SIDE,
) -> tuple[dict[str, Any], list[bytes]]:
    """The answer's content and buffers: ``rgb`` ``(H,W,3)`` uint8 and each map ``(h,w)`` in
    [0,1] (or None for a failed cell), all at the same size, the longer side at most ``side``."""
    H, W = int(rgb.shape[0]), int(rgb.shape[1])
    h, w = wire.fit_side(H, W, side)
    image = rgb
    if (h, w) != (H, W):
        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        t = torch.nn.functional.interpolate(t, size=(h, w), mode="area")[0]
        image = (t + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    buffers = [wire.encode_image(np.ascontiguousarray(image))]
    for heat in maps:
        buffers.append(b"" if heat is None else wire.encode_heatmap(wire.resize_map(heat, (h, w))))
    content = {
        "type": "compare",
        "status": "ready",
        "index": index,
        "h": h,
        "w": w,
        "layer": layer,
        "scale": SCALE,
        "cells": cells,
    }
    return content, buffers
