"""The embedding map in a real browser (Debian's Chromium via Playwright): in JupyterLab, and in
an offline ``to_html`` page. Points are found with ``canvas.fwPointPosition(i)``."""

from __future__ import annotations

import json

import nbformat
import pytest
import torch
from browser import READY, click_thumb_and_wait
from playwright.sync_api import Page
from test_standalone_browser import offline_page  # noqa: F401  (a fixture)

import famwidget as fw
from famwidget.bench.jupyter import run_all, wait_for_kernel

pytestmark = pytest.mark.browser

MAP = ".famwidget .fw-map-panel canvas.fw-map"

NOTEBOOK = """
import json, ipywidgets, torch, torch.nn.functional as F, famwidget as fw
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
)
tint = torch.eye(3)[torch.arange(24) % 3][:, :, None, None]
x = torch.rand(24, 3, 32, 32) * 0.5 + 0.5 * tint
w = fw.Explorer(model, x, labels=[f"tint {i % 3}" for i in range(24)])  # the map: on by default
w.selection = [1, 2, 3]  # set from Python
seen = ipywidgets.Label("none", layout={"width": "600px"})
seen.add_class("seen-selection")
w.observe(lambda change: setattr(seen, "value", json.dumps(change["new"])), names=["selection"])
with torch.no_grad():
    f = F.normalize(model(x), dim=1)
sim = f @ f.T
sim.fill_diagonal_(-2)
print("RANKING=" + json.dumps(sim.argsort(dim=1, descending=True)[:, :5].tolist()))
display(seen)
w
"""

ISOLATED = """c => { // points with no other point within 3 px (a click finds them alone)
  const n = Number(c.dataset.count), p = [...Array(n).keys()].map((i) => c.fwPointPosition(i));
  return p.map((a, i) => p.every((b, j) => j === i || Math.hypot(a.x - b.x, a.y - b.y) > 3)
    && a.x > 10 && a.y > 10 && a.x < c.clientWidth - 10 && a.y < c.clientHeight - 10 ? i : -1)
    .filter((i) => i >= 0); }"""

IN_BOX = """(c, b) => [...Array(Number(c.dataset.count)).keys()].filter((i) => {
  const p = c.fwPointPosition(i);
  return p.x >= b[0] && p.x <= b[2] && p.y >= b[1] && p.y <= b[3]; })"""


def point(page: Page, i: int) -> tuple[float, float]:
    """Page coordinates of map point ``i``."""
    canvas = page.locator(MAP)
    canvas.scroll_into_view_if_needed()
    pos = canvas.evaluate("(c, i) => c.fwPointPosition(i)", i)
    box = canvas.bounding_box()
    return box["x"] + pos["x"], box["y"] + pos["y"]


def click_point_and_wait(page: Page, i: int) -> None:
    page.mouse.click(*point(page, i))
    page.wait_for_function(
        "i => { const r = document.querySelector('.famwidget');"
        " return r.dataset.state === 'ready' && r.querySelector('.fw-caption').textContent"
        ".length > 0 && r.querySelector('.fw-thumb.fw-selected')?.dataset.index === String(i)"
        " && !r.classList.contains('fw-has-pair'); }",
        arg=i,
    )


def box_select(page: Page, fraction: float) -> list[int]:
    """Shift+drag over the left ``fraction`` of the map; returns the points inside (from the
    browser's own positions)."""
    canvas = page.locator(MAP)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    local = [4, 4, box["width"] * fraction, box["height"] - 4]
    inside = canvas.evaluate(IN_BOX, local)
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + local[0], box["y"] + local[1])
    page.mouse.down()
    page.mouse.move(box["x"] + local[2], box["y"] + local[3], steps=6)
    page.mouse.up()
    page.keyboard.up("Shift")
    return inside


def check_hover_and_zoom(page: Page, i: int) -> None:
    """Hovering point i shows its thumbnail; the wheel zooms (point positions move)."""
    page.mouse.move(*point(page, i))
    page.wait_for_selector(f".fw-map-tip:not([hidden])[data-index='{i}']")
    assert page.locator(".fw-map-tip canvas.fw-map-tip-image").is_visible()
    canvas = page.locator(MAP)
    far = (i + 1) % int(canvas.get_attribute("data-count"))
    before = canvas.evaluate("(c, i) => c.fwPointPosition(i)", far)
    page.mouse.wheel(0, -300)
    page.wait_for_function(
        "([i, x, y]) => { const p = document.querySelector('canvas.fw-map').fwPointPosition(i);"
        " return Math.hypot(p.x - x, p.y - y) > 5; }",
        arg=[far, before["x"], before["y"]],
    )
    page.click(".fw-map-reset")


def check_pair(page: Page, anchor: int, neighbour: int) -> None:
    """A neighbour click: the pair side by side, each map explaining its similarity to the
    other; the list stays that of the anchor."""
    page.click(f".fw-neighbours .fw-neighbour[data-index='{neighbour}']")
    page.wait_for_function(
        "j => { const r = document.querySelector('.famwidget');"
        " return r.dataset.state === 'ready' && r.classList.contains('fw-has-pair') &&"
        " r.querySelector('.fw-thumb.fw-selected')?.dataset.index === String(j); }",
        arg=neighbour,
    )
    caption = page.locator(".famwidget .fw-caption").text_content()
    assert f"cosine similarity to the image {anchor}" in caption, caption
    paired = page.locator(".famwidget .fw-pair-caption").text_content()
    assert f"cosine similarity to the image {neighbour}" in paired, paired
    assert page.locator(".famwidget canvas.fw-pair").is_visible()
    active = page.locator(".fw-neighbour.fw-active")
    assert active.get_attribute("data-index") == str(neighbour)
    assert page.locator(".fw-neighbours").get_attribute("data-of") == str(anchor)


def test_map_in_jupyterlab(page: Page, jupyter_server, jupyter_root, screenshots):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, jupyter_root / "embedding_map.ipynb")
    page.set_default_timeout(120_000)
    page.set_viewport_size({"width": 1300, "height": 1000})
    page.goto(f"{jupyter_server}/lab/tree/embedding_map.ipynb?reset")
    wait_for_kernel(page)
    run_all(page)
    page.wait_for_selector(f"{MAP}[data-count='24']")
    page.locator(".fw-map-panel").scroll_into_view_if_needed()
    # Python's selection is drawn in the map and marked in the gallery
    assert page.get_attribute(MAP, "data-selected") == "3"
    marked = page.eval_on_selector_all(
        ".fw-thumb.fw-in-selection", "es => es.map(e => e.dataset.index)"
    )
    assert sorted(marked) == ["1", "2", "3"]
    text = page.locator(".jp-OutputArea-output", has_text="RANKING=").first.text_content()
    ranking = json.loads(text.split("RANKING=")[1].strip().splitlines()[0])
    alone = page.locator(MAP).evaluate(ISOLATED)
    assert alone, "some point stands alone on the map"
    i = alone[0]
    click_point_and_wait(page, i)
    caption = page.locator(".famwidget .fw-caption").text_content()
    assert caption.startswith(f"tint {i % 3} ·"), caption
    page.wait_for_function(f"() => document.querySelector('.fw-neighbours').dataset.of === '{i}'")
    listed = page.eval_on_selector_all(
        ".fw-neighbours .fw-neighbour[data-index]", "es => es.map(e => Number(e.dataset.index))"
    )
    assert listed == ranking[i], (listed, ranking[i])
    check_hover_and_zoom(page, i)
    check_pair(page, i, ranking[i][1])
    page.screenshot(path=screenshots / "lab-embedding-map-pair.png")
    inside = box_select(page, 0.5)
    assert 0 < len(inside) < 24
    page.wait_for_function(
        "want => document.querySelector('.seen-selection')?.textContent === want",
        arg=json.dumps(inside),
    )  # the observer in the kernel saw exactly the box's points
    assert page.get_attribute(MAP, "data-selected") == str(len(inside))
    page.screenshot(path=screenshots / "lab-embedding-map-selection.png")


def test_map_in_the_offline_page(offline_page, tmp_path, screenshots):  # noqa: F811
    page = offline_page
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    )  # fmt: skip
    tint = torch.eye(3)[torch.arange(9) % 3][:, :, None, None]
    x = torch.rand(9, 3, 16, 16) * 0.5 + 0.5 * tint
    w = fw.EmbeddingExplorer(model, x, labels=[f"tint {i % 3}" for i in range(9)], k=3)
    w.select(0)
    expected = {i: [j for j, _ in w.neighbours_of(i)] for i in range(9)}
    path = w.to_html(tmp_path / "map.html")
    w.close()
    page.goto(path.as_uri())
    page.wait_for_selector(READY)
    page.wait_for_selector(f"{MAP}[data-count='9']")
    assert page.get_attribute(".famwidget", "data-host") == "standalone"
    first = page.evaluate(
        "() => [...document.querySelector('.famwidget').children].indexOf("
        "document.querySelector('.fw-map-panel')) < [...document.querySelector('.famwidget')"
        ".children].indexOf(document.querySelector('.fw-main'))"
    )
    assert first, "EmbeddingExplorer shows the map first"
    alone = page.locator(MAP).evaluate(ISOLATED)
    assert alone
    i = alone[-1]
    click_point_and_wait(page, i)
    listed = page.eval_on_selector_all(
        ".fw-neighbours .fw-neighbour[data-index]", "es => es.map(e => Number(e.dataset.index))"
    )
    assert listed == expected[i]
    check_hover_and_zoom(page, i)
    check_pair(page, i, expected[i][0])
    page.screenshot(path=screenshots / "standalone-embedding-map-pair.png")
    click_thumb_and_wait(page, expected[i][0])  # the pair's image alone: not taken as on screen
    assert page.locator(".famwidget.fw-has-pair").count() == 0
    click_point_and_wait(page, i)  # a plain view again: the pair slot is empty
    inside = box_select(page, 0.6)
    page.wait_for_selector(f"{MAP}[data-selected='{len(inside)}']")
    assert page.locator(".fw-thumb.fw-in-selection").count() == len(inside)
    assert not page.blocked and not page.errors, (page.blocked, page.errors)
