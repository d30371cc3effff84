"""Explorer.to_html pages in a real browser, opened from a file with the network blocked."""

from __future__ import annotations

import numpy as np
import pytest
from browser import (
    READY,
    assert_shows,
    canvas_digest,
    check_blend_and_hover,
    click_thumb_and_wait,
    expected_view,
    image_share,
    pixels,
    set_range,
)
from playwright.sync_api import Page

import famwidget as fw
from famwidget.widget import wire

pytestmark = pytest.mark.browser


@pytest.fixture
def offline_page(page: Page) -> Page:
    """A page whose every request other than file:// and blob: is refused (and recorded)."""
    blocked: list[str] = []

    def guard(route):
        url = route.request.url
        if url.startswith(("file:", "blob:", "data:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", guard)
    page.blocked = blocked
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    return page


def kernel_view(model, images, method: str, i: int = 3) -> np.ndarray:
    """What the page must show at alpha 1 for image ``i``: the jet colours of the heat bytes
    that fw.explain and the wire encoding give (computed here, not read from the page)."""
    exp = fw.explain(model, images[i : i + 1], method)
    heat = wire.encode_heatmap(wire.resize_map(exp.heatmap[0], images.shape[-2:]))
    return expected_view(heat, *images.shape[-2:])


def test_standalone_page_works_offline(offline_page, tiny_embedding, images, tmp_path, screenshots):
    page = offline_page
    explorer = fw.Explorer(tiny_embedding, images, labels=list("abcde"))
    explorer.select(1)
    path = explorer.to_html(tmp_path / "page.html", methods=["grad-fam", "score-fam"])
    explorer.close()
    page.goto(path.as_uri())
    page.wait_for_selector(READY)
    assert page.get_attribute(".famwidget", "data-host") == "standalone"
    assert page.get_attribute(".fw-thumb.fw-selected", "data-index") == "1"
    click_thumb_and_wait(page, 3)
    set_range(page, "input.fw-alpha", 1)
    fam = canvas_digest(page)
    assert_shows(pixels(page), kernel_view(tiny_embedding, images, "grad-fam"), "grad-fam")
    page.select_option("select.fw-method", "score-fam")
    page.wait_for_function(
        "() => document.querySelector('.fw-caption').textContent.toLowerCase()"
        ".includes('score-fam')"
    )
    assert canvas_digest(page) != fam, "score-fam's embedded map differs from grad-fam's"
    assert_shows(pixels(page), kernel_view(tiny_embedding, images, "score-fam"), "score-fam")
    page.select_option("select.fw-colormap", "gray")
    gray = canvas_digest(page)
    page.select_option("select.fw-colormap", "viridis")
    assert canvas_digest(page) != gray
    check_blend_and_hover(page)
    page.screenshot(path=screenshots / "standalone-offline.png")
    assert page.blocked == [], f"the page tried the network: {page.blocked}"
    assert page.errors == []


def test_standalone_demo_page(offline_page, tmp_path, screenshots):
    """The demo command's page (re-identification): every thumbnail clickable offline and
    painted differently, Score-FAM's map differs from Grad-FAM's on screen, the query's pair
    view is drawn and follows the result, side by side shows the plain image, the threshold
    paints the image below it."""
    from famwidget.cli import demo

    path = demo(tmp_path, "grad-fam", 4)
    page = offline_page
    page.goto(path.as_uri())
    page.wait_for_selector(READY)
    set_range(page, "input.fw-alpha", 1)
    views, pairs = [], []
    for i in range(4):
        click_thumb_and_wait(page, i)
        views.append(pixels(page))
        pairs.append(pixels(page, "canvas.fw-pair"))
        assert views[-1].reshape(-1, 4).std(0).max() > 10, f"result {i}: a map, not a flat canvas"
    digests = {v.tobytes() for v in views}
    assert len(digests) == 4, "every result paints its own map"
    # The pair view: the query, explained towards the chosen result (Similarity(result k)).
    assert "fw-has-pair" in page.get_attribute(".famwidget", "class")
    assert page.locator("canvas.fw-pair").is_visible()
    assert "query" in page.locator(".fw-pair-caption").text_content()
    assert pairs[0].reshape(-1, 4).std(0).max() > 10
    assert len({p.tobytes() for p in pairs}) > 1, "the query's map follows the chosen result"

    # Score-FAM on the same result: another map on screen.
    grad_fam = pixels(page)
    page.select_option("select.fw-method", "score-fam")
    page.wait_for_function(
        "() => document.querySelector('.fw-caption').textContent.toLowerCase()"
        ".includes('score-fam')"
    )
    score_fam = pixels(page)
    assert score_fam.shape == grad_fam.shape and (score_fam != grad_fam).any(axis=-1).mean() > 0.05

    # Alpha 0: the image; side by side: the same image beside the blended view.
    set_range(page, "input.fw-alpha", 0)
    image = pixels(page)
    set_range(page, "input.fw-alpha", 1)
    assert image_share(pixels(page), image) < 0.2  # the heatmap covers the image at alpha 1
    assert not page.locator("canvas.fw-side").is_visible()
    page.check("input.fw-side-toggle")
    page.wait_for_selector(".fw-side-by-side canvas.fw-side", state="visible")
    assert np.array_equal(pixels(page, "canvas.fw-side"), image)
    assert image_share(pixels(page), image) < 0.2  # the main view keeps the heatmap
    page.screenshot(path=screenshots / "demo-page-side-by-side.png")
    page.uncheck("input.fw-side-toggle")
    page.wait_for_selector("canvas.fw-side", state="hidden")

    # The threshold: below it the image shows unchanged, more of it the higher it is.
    shares = []
    for t in (0, 0.5, 1):
        set_range(page, "input.fw-threshold", t)
        shares.append(image_share(pixels(page), image))
    assert shares[0] < shares[1] < shares[2] and shares[2] > 0.9, shares
    page.screenshot(path=screenshots / "demo-page.png")
    assert page.blocked == [] and page.errors == []
