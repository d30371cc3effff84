"""A gallery of 10,000 images and the compare view, in JupyterLab (Debian's Chromium).

10,000 thumbnails: the gallery keeps a bounded number of them in the DOM however far it
scrolls, their pictures arrive in binary pages on demand, the last one can be clicked and its
explanation arrives; the keyboard and the filter work on the whole set. The compare view shows
one cell per method that applies to the shipped re-ID net, each painting its own map.
"""

from __future__ import annotations

import hashlib

import nbformat
import pytest
from browser import click_thumb_and_wait
from playwright.sync_api import Page

from famwidget.bench.jupyter import run_all, wait_for_kernel

pytestmark = pytest.mark.browser

N = 10_000
#: thumbnails in the DOM at most: rows in sight (320 px) plus 3 rows of margin each side
BOUND = 200

LARGE = f"""
import torch
from torch import nn
import famwidget as fw
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2,
    padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
x = torch.rand({N}, 3, 24, 24)
large = fw.Explorer(model, x, labels=[f"image {{i}}" for i in range({N})], methods=["grad-fam"])
large
"""

COMPARE = """
from famwidget.demo import reid_demo
demo = reid_demo(6)
reid = fw.Explorer(demo.model, demo.gallery, display=demo.display)
print("offered:", ",".join(reid.methods))
reid
"""


def thumbs_in_dom(root) -> int:
    return root.locator(".fw-thumb").count()


@pytest.fixture
def gallery_notebook(jupyter_root):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(LARGE), nbformat.v4.new_code_cell(COMPARE)]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, jupyter_root / "gallery10k.ipynb")
    return "gallery10k.ipynb"


def test_ten_thousand_thumbnails_and_the_compare_grid(
    page: Page, jupyter_server, gallery_notebook, screenshots
):
    page.set_default_timeout(120_000)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{jupyter_server}/lab/tree/{gallery_notebook}?reset")
    wait_for_kernel(page)
    run_all(page)
    page.wait_for_selector(".famwidget >> nth=1", timeout=180_000)
    large, reid = page.locator(".famwidget").nth(0), page.locator(".famwidget").nth(1)
    gallery = large.locator(".fw-gallery")
    gallery.locator(".fw-thumb[data-index='0']:not([data-loading])").wait_for()
    assert gallery.get_attribute("data-count") == str(N)
    assert gallery.bounding_box()["height"] <= 330, "a scroll area of bounded height"
    first = thumbs_in_dom(large)
    assert 0 < first <= BOUND, first

    # scroll to the end: the last thumbnails come (their page asked for), the DOM stays small
    gallery.evaluate("g => { g.scrollTop = g.scrollHeight; }")
    last = gallery.locator(f".fw-thumb[data-index='{N - 1}']:not([data-loading])")
    last.wait_for()
    assert thumbs_in_dom(large) <= BOUND
    assert large.locator(".fw-thumb[data-index='0']").count() == 0, "the first rows left the DOM"
    painted = last.locator("canvas").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i+1] + d[i+2];"
        " return [c.width, c.height, s]; }"
    )
    assert painted[:2] == [24, 24] and painted[2] > 0, painted

    # click the last one: its explanation arrives, the view stays in sight
    click_thumb_and_wait(page, N - 1)
    assert large.locator(".fw-caption").text_content().startswith(f"image {N - 1} ·")
    view = large.locator("canvas.fw-view").bounding_box()
    assert view["y"] + view["height"] > 0 and view["y"] < 900, "the view stays in sight"

    # keyboard and filter on the whole set
    last.focus()
    page.keyboard.press("Home")
    assert page.evaluate("() => document.activeElement.dataset.index") == "0"
    assert gallery.evaluate("g => g.scrollTop") == 0
    page.keyboard.press("End")
    assert page.evaluate("() => document.activeElement.dataset.index") == str(N - 1)
    large.locator(".fw-filter").fill("image 999")
    assert large.locator(".fw-gallery-count").text_content() == f"11 of {N} images"
    assert thumbs_in_dom(large) == 11
    large.locator(".fw-filter").fill("")
    assert thumbs_in_dom(large) <= BOUND
    gallery.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "gallery-10k.png")

    # compare: one cell per method the picker offers, each with its own pixels
    offered = reid.locator("select.fw-method option:not([disabled])").evaluate_all(
        "os => os.map(o => o.value)"
    )
    assert len(offered) >= 3, offered
    reid.locator(".fw-thumb[data-index='0']").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.famwidget')[1].dataset.state === 'ready'"
    )
    reid.locator(".fw-compare-toggle").click()
    reid.locator(".fw-compare-panel[data-busy='false'] .fw-compare-cell >> nth=0").wait_for()
    cells = reid.locator(".fw-compare .fw-compare-cell[data-method]")
    methods = cells.evaluate_all("cs => cs.map(c => c.dataset.method)")
    assert methods == offered
    assert "one colour scale" in reid.locator(".fw-compare-scale").text_content()
    digests = cells.evaluate_all(
        "cs => cs.map(c => { const m = c.querySelector('canvas');"
        " return Array.from(m.getContext('2d').getImageData(0, 0, m.width, m.height).data); })"
    )
    hashes = {hashlib.sha1(bytes(d)).hexdigest() for d in digests}
    assert len(hashes) == len(methods), "every method paints its own map"
    assert all(len(d) == 128 * 64 * 4 for d in digests)
    reid.locator(".fw-compare-panel").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "compare.png")
