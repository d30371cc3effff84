"""Explorer.from_store in JupyterLab (Debian's Chromium): a stored set of 600 entries opens
without loading it, a clicked entry shows its stored map on screen (the very pixels of the
stored heatmap), and another layer is explained live by the kernel."""

from __future__ import annotations

import nbformat
import numpy as np
import pytest
import zarr  # noqa: F401  (the test extra: a missing zarr fails, never skips)
from browser import assert_shows, click_thumb_and_wait, expected_view, pixels, set_range
from playwright.sync_api import Page

import famwidget as fw
from famwidget.bench.jupyter import run_all, wait_for_kernel

pytestmark = pytest.mark.browser

N, PICK = 600, 550

SETUP = f"""
import torch
from torch import nn
import famwidget as fw
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2,
    padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
x = torch.rand({N}, 3, 32, 32, generator=torch.Generator().manual_seed(0))
"""


@pytest.fixture
def store_notebook(jupyter_root):
    path = jupyter_root / "browse.zarr"
    scope: dict = {}
    exec(SETUP, scope)
    fw.explain_dataset(
        scope["model"], scope["x"], "grad-fam", "2", out=path, batch_size=200, progress=False
    )
    show = f"w = fw.Explorer.from_store({str(path)!r}, model, data=x)\nw"
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(show)]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, jupyter_root / "browse_store.ipynb")
    return "browse_store.ipynb", fw.open_explanations(path)


def test_a_store_opens_and_a_clicked_entry_shows_its_stored_map(
    page: Page, jupyter_server, store_notebook, screenshots
):
    name, store = store_notebook
    page.set_default_timeout(120_000)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{jupyter_server}/lab/tree/{name}?reset")
    wait_for_kernel(page)
    run_all(page)
    root = page.locator(".famwidget")
    root.wait_for(timeout=180_000)
    gallery = root.locator(".fw-gallery")
    gallery.locator(".fw-thumb[data-index='0']:not([data-loading])").wait_for()
    assert gallery.get_attribute("data-count") == str(N)

    root.locator(".fw-filter").fill(str(PICK))  # the captions are the stored names
    thumb = gallery.locator(f".fw-thumb[data-index='{PICK}']:not([data-loading])")
    thumb.wait_for()
    painted = thumb.locator("canvas").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i+1] + d[i+2];"
        " return s; }"
    )
    assert painted > 0, "the stored thumbnail arrived in its page"
    click_thumb_and_wait(page, PICK)
    caption = root.locator(".fw-caption").text_content()
    assert caption.startswith(f"{PICK} (stored) · Grad-FAM map at 2"), caption
    set_range(page, "input.fw-alpha", 1)
    stored = np.asarray(store.heatmaps[PICK])
    assert stored.std() > 2, "a map with structure, not a flat one"
    assert_shows(pixels(page), expected_view(stored, 32, 32), f"the stored map of entry {PICK}")
    page.screenshot(path=screenshots / "store-browse.png")

    root.locator("select.fw-layer").select_option("0")  # another layer: the kernel explains it
    page.wait_for_function(
        "() => { const r = document.querySelector('.famwidget');"
        " return r.dataset.state === 'ready' &&"
        " !r.querySelector('.fw-caption').textContent.includes('(stored)'); }"
    )
    live = pixels(page)
    assert not np.array_equal(live[..., :3], expected_view(stored, 32, 32)), "a new map"
