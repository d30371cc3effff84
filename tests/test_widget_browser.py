"""The widget in a real browser (Debian's Chromium via Playwright): JupyterLab and Notebook 7."""

from __future__ import annotations

import nbformat
import pytest
from browser import READY, check_blend_and_hover, click_thumb_and_wait
from playwright.sync_api import Page

from famwidget.bench.jupyter import run_all, wait_for_kernel

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("frontend", ["lab", "notebooks"])
def test_quickstart_widget(page: Page, jupyter_server, screenshots, frontend):
    page.set_default_timeout(120_000)
    # ?reset: JupyterLab must not restore tabs of earlier tests beside this notebook
    url = "lab/tree/quickstart.ipynb?reset" if frontend == "lab" else "notebooks/quickstart.ipynb"
    page.goto(f"{jupyter_server}/{url}")
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
    click_thumb_and_wait(page, 5)  # a click on the image already on screen is answered too
    caption = page.eval_on_selector(".fw-caption", "e => e.textContent")
    labels = page.eval_on_selector_all(".fw-thumb-caption", "es => es.map(e => e.textContent)")
    assert caption.startswith(labels[5] + " ·")


STREAMING = """
import torch, famwidget as fw
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 96, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(96, 96, 3, stride=2, padding=1), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
)
w = fw.Explorer(model, torch.rand(4, 3, 64, 64), method="score-fam", batch_size=4)
w.stream_interval = 0  # this tiny model is fast: stream every partial map
w
"""


def test_score_fam_streams_progress_before_ready(
    page: Page, jupyter_server, jupyter_root, screenshots
):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(STREAMING)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, jupyter_root / "streaming.ipynb")
    page.set_default_timeout(120_000)
    page.goto(f"{jupyter_server}/lab/tree/streaming.ipynb?reset")  # no other restored tabs
    wait_for_kernel(page)
    run_all(page)
    page.wait_for_selector(".famwidget .fw-thumb[data-index='1']")
    page.evaluate(
        """() => {
        const root = document.querySelector('.famwidget');
        const bar = root.querySelector('.fw-progress');
        window.fwSeen = [];
        // every value data-progress took (old values of each change, then the current one)
        new MutationObserver((records) => records.forEach((r) => window.fwSeen.push(
            Number(r.oldValue)))).observe(bar, {attributes: true, attributeOldValue: true,
            attributeFilter: ['data-progress']});
        }"""
    )
    click_thumb_and_wait(page, 1)
    seen = page.evaluate("() => window.fwSeen")
    seen.append(float(page.get_attribute(".fw-progress", "data-progress")))
    partial = [p for p in seen if 0 < p < 1]  # the final state sets 1: these came before
    assert len(set(partial)) >= 3, f"progress values: {seen}"
    assert partial == sorted(partial), "progress only moves forward"
    assert seen[-1] == 1
    page.screenshot(path=screenshots / "lab-score-fam-done.png")
