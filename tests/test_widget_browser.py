"""The widget in a real browser (Debian's Chromium via Playwright): JupyterLab and Notebook 7."""

from __future__ import annotations

import pytest
from browser import READY, check_blend_and_hover, click_thumb_and_wait
from playwright.sync_api import Page

from famwidget.bench.jupyter import run_all, wait_for_kernel

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("frontend", ["lab", "notebooks"])
def test_quickstart_widget(page: Page, jupyter_server, screenshots, frontend):
    page.set_default_timeout(120_000)
    path = "lab/tree" if frontend == "lab" else "notebooks"
    page.goto(f"{jupyter_server}/{path}/quickstart.ipynb")
    wait_for_kernel(page)
    run_all(page)
    page.wait_for_selector(READY, timeout=180_000)  # the notebook's select(0) arrived
    page.locator(".famwidget").scroll_into_view_if_needed()
    click_thumb_and_wait(page, 2)
    page.screenshot(path=screenshots / f"{frontend}-ready.png")
    check_blend_and_hover(page)
    page.screenshot(path=screenshots / f"{frontend}-hover-channel.png")
    # quick clicks: the last one wins
    for i in (3, 4, 5):
        page.click(f".fw-thumb[data-index='{i}']")
    click_thumb_and_wait(page, 5)
    caption = page.eval_on_selector(".fw-caption", "e => e.textContent")
    labels = page.eval_on_selector_all(".fw-thumb-caption", "es => es.map(e => e.textContent)")
    assert caption.startswith(labels[5] + " ·")
