"""Helpers for the real-browser tests: read the widget's canvas, drive its controls."""

from __future__ import annotations

import hashlib
import io

from PIL import Image
from playwright.sync_api import Page

READY = ".famwidget[data-state='ready']"


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
