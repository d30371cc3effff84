"""Explorer.to_html pages in a real browser, opened from a file with the network blocked."""

from __future__ import annotations

import pytest
from browser import READY, canvas_digest, check_blend_and_hover, click_thumb_and_wait, set_range
from playwright.sync_api import Page

import famwidget as fw

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
    page.select_option("select.fw-method", "score-fam")
    page.wait_for_function(
        "() => document.querySelector('.fw-caption').textContent.toLowerCase()"
        ".includes('score-fam')"
    )
    assert canvas_digest(page) != fam, "score-fam's embedded map differs from grad-fam's"
    page.select_option("select.fw-colormap", "gray")
    gray = canvas_digest(page)
    page.select_option("select.fw-colormap", "viridis")
    assert canvas_digest(page) != gray
    check_blend_and_hover(page)
    page.screenshot(path=screenshots / "standalone-offline.png")
    assert page.blocked == [], f"the page tried the network: {page.blocked}"
    assert page.errors == []


def test_standalone_demo_page(offline_page, tmp_path, screenshots):
    """The demo command's page: real photos, every thumbnail clickable offline."""
    from famwidget.cli import demo

    path = demo(tmp_path, "grad-fam", 4)
    page = offline_page
    page.goto(path.as_uri())
    page.wait_for_selector(READY)
    for i in range(4):
        click_thumb_and_wait(page, i)
    page.screenshot(path=screenshots / "demo-page.png")
    assert page.blocked == [] and page.errors == []
