"""Helpers for the real-browser tests: read the widget's canvas, drive its controls."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import re

import numpy as np
from PIL import Image
from playwright.sync_api import Page

READY = ".famwidget[data-state='ready']"
STOPS_JS = pathlib.Path(__file__).parent.parent / "js" / "colormap_stops.js"


def colormap_table(name: str = "jet") -> np.ndarray:
    """The ``(256,3)`` uint8 table the browser paints with, rebuilt here from the stops of
    ``js/colormap_stops.js`` (linear between stops, rounded half up as ``Math.round``)."""
    text = STOPS_JS.read_text()
    found = re.search(rf"\b{name}: (\[[0-9, ]+\])", text)
    assert found, f"colormap {name} is not in {STOPS_JS}"
    stops = np.asarray(json.loads(found.group(1)), dtype=np.float64).reshape(-1, 3)
    pos = np.arange(256) / 255 * (len(stops) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(stops) - 2)
    t = (pos - lo)[:, None]
    return np.floor(stops[lo] * (1 - t) + stops[lo + 1] * t + 0.5).astype(np.uint8)


def expected_view(heat: bytes | np.ndarray, h: int, w: int, cmap: str = "jet") -> np.ndarray:
    """What canvas.fw-view must show at alpha 1: ``(h,w,3)`` uint8, the colormapped heat bytes."""
    levels = np.frombuffer(heat, dtype=np.uint8) if isinstance(heat, bytes) else heat
    return colormap_table(cmap)[np.asarray(levels).reshape(h, w)]


def pixels(page: Page, canvas: str = "canvas.fw-view", root: str = ".famwidget") -> np.ndarray:
    """The RGBA pixels ``(H,W,4)`` uint8 of a canvas of the widget (its backing store)."""
    width, height, data = page.eval_on_selector(
        f"{root} {canvas}",
        "c => [c.width, c.height,"
        " Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]",
    )
    return np.asarray(data, dtype=np.uint8).reshape(height, width, 4)


def image_share(view: np.ndarray, image: np.ndarray) -> float:
    """The share of pixels of ``view`` that show the image unchanged."""
    return float((view == image).all(axis=-1).mean())


def assert_shows(view: np.ndarray, expected: np.ndarray, what: str, tol: int = 6) -> None:
    """``view`` ``(H,W,4)`` shows ``expected`` ``(H,W,3)``: opaque, 99% of pixels within 2 levels
    and none beyond ``tol`` (one heat level of rounding moves jet by at most 5)."""
    assert view.shape[:2] == expected.shape[:2], f"{what}: {view.shape} vs {expected.shape}"
    assert (view[..., 3] == 255).all(), f"{what}: the view is opaque"
    diff = np.abs(view[..., :3].astype(int) - expected.astype(int)).max(axis=-1)
    close = float((diff <= 2).mean())
    assert close > 0.99 and diff.max() <= tol, (
        f"{what}: {100 * close:.1f}% of pixels within 2 levels, worst {diff.max()}"
    )


RECORD_PAINTS = """() => {
  // every picture put on canvas.fw-view: a hash of its pixels and the widget's state then
  window.fwPaints = [];
  if (window.fwPaintsInstalled) return;
  window.fwPaintsInstalled = true;
  const put = CanvasRenderingContext2D.prototype.putImageData;
  CanvasRenderingContext2D.prototype.putImageData = function (img, ...rest) {
    if (this.canvas.classList.contains('fw-view')) {
      let h = 0;
      for (const v of img.data) h = (Math.imul(h, 31) + v) >>> 0;
      const root = this.canvas.closest('.famwidget');
      window.fwPaints.push({ hash: h, state: root ? root.dataset.state : '' });
    }
    return put.call(this, img, ...rest);
  };
}"""


def record_paints(page: Page) -> None:
    """From now on, record every picture the widget paints on its view (see :func:`paints`)."""
    page.evaluate(RECORD_PAINTS)


def paints(page: Page) -> list[dict]:
    """The paints recorded since :func:`record_paints`: ``[{hash, state}, ...]`` in order."""
    return page.evaluate("() => window.fwPaints")


def canvas_digest(page: Page, root: str = ".famwidget") -> str:
    """A hash of the pixels of the widget's canvas.fw-view."""
    data = page.eval_on_selector(
        f"{root} canvas.fw-view",
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)",
    )
    assert len(data) > 4 * 16, "the canvas shows an image"
    return hashlib.sha1(bytes(data)).hexdigest()


def set_range(page: Page, selector: str, value: float) -> None:
    """Move a range input as a user would (value + input event)."""
    page.eval_on_selector(
        selector,
        "(el, v) => { el.value = String(v);"
        " el.dispatchEvent(new Event('input', {bubbles: true})); }",
        value,
    )


def click_thumb_and_wait(page: Page, index: int, timeout: float = 60_000) -> None:
    """Click thumbnail ``index`` and wait until the widget shows its explanation."""
    page.click(f".fw-thumb[data-index='{index}']")
    page.wait_for_selector(f".fw-thumb.fw-selected[data-index='{index}']", timeout=timeout)
    page.wait_for_function(
        "i => { const r = document.querySelector('.famwidget');"
        " return r && r.dataset.state === 'ready' &&"
        " r.querySelector('.fw-caption').textContent.length > 0 &&"
        " document.querySelector('.fw-thumb.fw-selected')?.dataset.index === String(i); }",
        arg=index,
        timeout=timeout,
    )


def check_blend_and_hover(page: Page) -> None:
    """Alpha 0 and 1 paint different pixels; hovering lists channels; a channel can be inspected."""
    set_range(page, "input.fw-alpha", 0)
    image_only = canvas_digest(page)
    set_range(page, "input.fw-alpha", 1)
    heat_only = canvas_digest(page)
    assert image_only != heat_only
    set_range(page, "input.fw-alpha", 0.5)
    page.hover("canvas.fw-view", position={"x": 60, "y": 60})
    page.wait_for_selector(".fw-channel[data-channel]")
    assert page.eval_on_selector(".fw-channels-title", "e => e.textContent") == (
        "channels at the pointer"
    )
    blended = canvas_digest(page)
    first = page.locator(".fw-channel").first
    channel = first.get_attribute("data-channel")
    first.hover()
    page.wait_for_selector(f".famwidget[data-hover-channel='{channel}']")
    assert canvas_digest(page) != blended, "hovering a channel shows that channel's map"


def check_legend(page: Page) -> None:
    """The colour bar is on screen and says what its colours are relative to."""
    legend = page.locator(".famwidget .fw-legend").first
    assert legend.is_visible()
    box = legend.locator(".fw-legend-bar").bounding_box()
    assert box["width"] >= 100 and box["height"] >= 6
    assert "per-image normalised 0-1" in legend.text_content()


def check_no_op_change(page: Page) -> None:
    """A method menu 'change' that keeps the current value answers at once: never 'computing'."""
    page.evaluate(
        """() => { const r = document.querySelector('.famwidget');
        window.fwStates = [];
        window.fwObserver = new MutationObserver(() => window.fwStates.push(r.dataset.state));
        window.fwObserver.observe(r, {attributes: true, attributeFilter: ['data-state']});
        const s = r.querySelector('select.fw-method');
        s.value = s.value; s.dispatchEvent(new Event('change', {bubbles: true})); }"""
    )
    page.wait_for_timeout(300)  # time for a (wrong) kernel round trip to show up
    states = page.evaluate("() => { window.fwObserver.disconnect(); return window.fwStates; }")
    assert "computing" not in states, states
    assert page.get_attribute(".famwidget", "data-state") == "ready"


def check_download(page: Page) -> Image.Image:
    """The PNG button saves the view as the browser draws it; returns the picture."""
    with page.expect_download() as info:
        page.click(".famwidget .fw-download")
    with open(info.value.path(), "rb") as file:
        data = file.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    picture = Image.open(io.BytesIO(data))
    view = page.eval_on_selector(
        ".famwidget canvas.fw-view", "c => c.getBoundingClientRect().width"
    )
    assert picture.width >= round(view) and picture.height > 100
    assert info.value.suggested_filename.startswith("famwidget-")
    return picture
