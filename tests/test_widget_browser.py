"""The widget in a real browser (Debian's Chromium via Playwright): JupyterLab (light and dark)
and Notebook 7."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest
from browser import (
    READY,
    assert_shows,
    canvas_digest,
    check_blend_and_hover,
    check_download,
    check_legend,
    check_no_op_change,
    click_thumb_and_wait,
    expected_view,
    paints,
    pixels,
    record_paints,
    set_range,
)
from playwright.sync_api import Page

import famwidget as fw
from famwidget.bench.jupyter import jupyterlab, run_all, wait_for_kernel
from famwidget.widget import wire

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
    host = "jupyterlab" if frontend == "lab" else "notebook"
    assert page.get_attribute(".famwidget", "data-host") == host
    assert page.get_attribute(".famwidget", "data-theme") == "light"
    set_range(page, "input.fw-alpha", 1)
    before = canvas_digest(page)
    click_thumb_and_wait(page, 2)
    assert canvas_digest(page) != before, "another image's map is on screen"
    set_range(page, "input.fw-alpha", 0.5)
    page.screenshot(path=screenshots / f"{frontend}-ready.png")
    check_legend(page)
    check_no_op_change(page)
    check_blend_and_hover(page)
    page.screenshot(path=screenshots / f"{frontend}-hover-channel.png")
    # quick clicks: the last one wins
    for i in (3, 4, 5):
        page.click(f".fw-thumb[data-index='{i}']")
    click_thumb_and_wait(page, 5)  # a click on the image already on screen is answered too
    caption = page.eval_on_selector(".fw-caption", "e => e.textContent")
    labels = page.eval_on_selector_all(".fw-thumb-caption", "es => es.map(e => e.textContent)")
    assert caption.startswith(labels[5] + " ·")
    if frontend == "lab":
        png = check_download(page)
        png.save(screenshots / "lab-download.png")


def write_notebook(path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)


def kernel_maps(setup: str, method: str, indices, **options) -> dict[int, tuple]:
    """What the kernel computes for image ``i`` of the notebook's ``setup`` (run here too: the
    same seed gives the same model and images): ``{i: (heat bytes as on the wire, points)}``."""
    space: dict = {}
    exec(setup, space)
    model, x = space["model"], space["x"]
    out = {}
    for i in indices:
        exp = fw.explain(model, x[i : i + 1], method, **options)
        points = None if exp.points is None else exp.points[0].numpy()
        out[i] = (wire.encode_heatmap(wire.resize_map(exp.heatmap[0], x.shape[-2:])), points)
    return out


PIXELS_SETUP = """
import torch, famwidget as fw
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
)
x = torch.rand(4, 3, 48, 64)
"""
PIXELS_WIDGET = """
w = fw.Explorer(model, x, methods=["grad-fam", "fixations"])
w
"""


def test_the_canvas_shows_the_kernels_maps(page: Page, jupyter_server, jupyter_root, screenshots):
    """At alpha 1 the canvas is the colormapped heat bytes the kernel computed for the clicked
    image (and another image's for another click); the threshold shows the image below it;
    side by side shows the plain image; fixation points are painted where the kernel put them."""
    write_notebook(jupyter_root / "pixels.ipynb", PIXELS_SETUP + PIXELS_WIDGET)
    page.set_default_timeout(120_000)
    page.goto(f"{jupyter_server}/lab/tree/pixels.ipynb?reset")
    wait_for_kernel(page)
    run_all(page)
    page.wait_for_selector(".famwidget .fw-thumb[data-index='3']")
    expected = kernel_maps(PIXELS_SETUP, "grad-fam", (1, 2))
    set_range(page, "input.fw-alpha", 1)
    views = {}
    for i in (1, 2):
        click_thumb_and_wait(page, i)
        views[i] = pixels(page)
        assert_shows(views[i], expected_view(expected[i][0], 48, 64), f"grad-fam of image {i}")
    changed = (views[1] != views[2]).any(axis=-1).mean()
    assert changed > 0.5, f"two images, two maps: only {changed:.0%} of the pixels differ"

    # the threshold: below it the image unchanged, above it the map
    set_range(page, "input.fw-alpha", 0)
    image = pixels(page)
    set_range(page, "input.fw-alpha", 1)
    set_range(page, "input.fw-threshold", 0.5)
    heat = np.frombuffer(expected[2][0], dtype=np.uint8).reshape(48, 64)
    below = (heat < 0.5 * 255)[..., None]
    want = np.where(below, image[..., :3], expected_view(heat, 48, 64))
    assert 0.1 < below.mean() < 0.9, "the threshold splits this map"
    assert_shows(pixels(page), want, "threshold 0.5")
    set_range(page, "input.fw-threshold", 0)

    # side by side: the plain image beside the view, which keeps its map
    page.check("input.fw-side-toggle")
    page.wait_for_selector(".fw-side-by-side canvas.fw-side", state="visible")
    assert np.array_equal(pixels(page, "canvas.fw-side"), image)
    assert_shows(pixels(page), expected_view(heat, 48, 64), "the view beside the image")
    page.screenshot(path=screenshots / "lab-pixels-side-by-side.png")
    page.uncheck("input.fw-side-toggle")

    # fixations: a white dot (in a dark frame) on every point the kernel found
    page.select_option("select.fw-method", "fixations")
    page.wait_for_function(
        "() => { const r = document.querySelector('.famwidget'); return r.dataset.state ==="
        " 'ready' && r.querySelector('.fw-caption').textContent.toLowerCase()"
        ".includes('fixations'); }"
    )
    points = kernel_maps(PIXELS_SETUP, "fixations", (2,))[2][1]
    assert points is not None and len(points) >= 1
    view = pixels(page)
    white = (view[..., :3] == 255).all(axis=-1)
    assert white[points[:, 0], points[:, 1]].all(), "every fixation point is painted white"
    dots = {(y, x) for y, x in points.tolist()}
    assert white.sum() == len(dots), "white only at the points (jet has no white)"
    below = [(y + 1, x) for y, x in dots if y + 1 < 48 and (y + 1, x) not in dots]
    frame = np.asarray([view[y, x, :3] for y, x in below])
    assert len(below) and frame.max() < 120, "a dark frame around each point"
    page.screenshot(path=screenshots / "lab-pixels-fixations.png")


STREAMING_SETUP = """
import torch, famwidget as fw
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 96, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(96, 96, 3, stride=2, padding=1), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
)
x = torch.rand(4, 3, 64, 64)
"""
STREAMING = (
    STREAMING_SETUP
    + """
w = fw.Explorer(model, x, method="score-fam", batch_size=4)
w.stream_interval = 0  # this tiny model is fast: stream every partial map
w
"""
)


def test_score_fam_streams_progress_before_ready(
    page: Page, jupyter_server, jupyter_root, screenshots
):
    write_notebook(jupyter_root / "streaming.ipynb", STREAMING)
    page.set_default_timeout(120_000)
    page.goto(f"{jupyter_server}/lab/tree/streaming.ipynb?reset")  # no other restored tabs
    wait_for_kernel(page)
    run_all(page)
    page.wait_for_selector(".famwidget .fw-thumb[data-index='1']")
    set_range(page, "input.fw-alpha", 1)
    record_paints(page)
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
    # partial maps reach the canvas: several pictures before the final one, none the image alone
    painted = paints(page)
    final = painted[-1]["hash"]
    placeholder = painted[0]["hash"]  # the clicked image with no map yet
    partial = {p["hash"] for p in painted if p["state"] == "computing"} - {placeholder, final}
    assert len(partial) >= 2, f"{len(partial)} partial maps painted: {painted}"
    # and the final picture is Score-FAM's map of image 1 as the kernel computes it
    heat = kernel_maps(STREAMING_SETUP, "score-fam", (1,), batch_size=4)[1][0]
    view = pixels(page)
    assert_shows(view, expected_view(heat, 64, 64), "score-fam of image 1")
    page.screenshot(path=screenshots / "lab-score-fam-done.png")


DARK = """
import torch, famwidget as fw
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
)
x = torch.rand(64, 3, 128, 64)  # small, tall inputs: drawn with crisp pixels
names = [f"person {i}" for i in range(64)]
w = fw.Explorer(model, x, labels=names, methods=["grad-fam", "score-fam"])
w
"""

BROKEN = """
bad = fw.Explorer(model, x, target=fw.targets.Dimension(99))  # the model has 32 dimensions
bad
"""


@pytest.fixture
def dark_lab(tmp_path, monkeypatch):
    """A JupyterLab server of its own whose user settings choose the JupyterLab Dark theme."""
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "themes.jupyterlab-settings").write_text(json.dumps({"theme": "JupyterLab Dark"}))
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "settings"))
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(DARK),
                                         nbformat.v4.new_code_cell(BROKEN)])  # fmt: skip
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, root / "dark.ipynb")
    with jupyterlab(root) as url:
        yield url


def test_dark_theme_narrow_crisp_and_errors(page: Page, dark_lab, screenshots):
    page.set_default_timeout(120_000)
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{dark_lab}/lab/tree/dark.ipynb?reset")
    wait_for_kernel(page)
    run_all(page)
    page.wait_for_selector(".famwidget >> nth=1")
    good, bad = page.locator(".famwidget").nth(0), page.locator(".famwidget").nth(1)
    good.locator(".fw-thumb[data-index='1']").wait_for()
    assert page.evaluate("() => document.body.dataset.jpThemeLight") == "false"
    assert good.get_attribute("data-theme") == "dark" and good.get_attribute("data-host") == (
        "jupyterlab"
    )
    # readable: light text on a dark background, both from JupyterLab's own variables
    fg, bg = good.evaluate(
        "e => { const s = getComputedStyle(e); return [s.color, s.backgroundColor]; }"
    )
    assert _luminance(fg) > 0.5 > 0.1 > _luminance(bg), (fg, bg)
    assert "Click a thumbnail" in good.locator(".fw-caption").text_content()  # idle hint
    hint_height = good.locator(".fw-stage").bounding_box()["height"]
    click_thumb_and_wait(page, 1)
    assert abs(good.locator(".fw-stage").bounding_box()["height"] - hint_height) <= 1
    crisp = good.locator("canvas.fw-view").evaluate(
        "c => [c.width, c.height, getComputedStyle(c).imageRendering,"
        " c.getBoundingClientRect().height]"
    )
    assert crisp[:3] == [64, 128, "pixelated"] and crisp[3] == 256, crisp
    check_legend(page)
    page.screenshot(path=screenshots / "lab-dark-ready.png")
    check_large_gallery(page, good)
    # narrow: below 700 px the channel list goes under the image
    page.set_viewport_size({"width": 680, "height": 900})
    page.wait_for_function(
        "() => { const r = document.querySelector('.famwidget');"
        " return r.querySelector('.fw-right').getBoundingClientRect().top >="
        " r.querySelector('.fw-stage').getBoundingClientRect().bottom; }"
    )
    width = good.evaluate("e => e.getBoundingClientRect().width")
    assert width < 700
    right = good.locator(".fw-right").bounding_box()
    assert right["x"] + right["width"] <= good.bounding_box()["x"] + width + 1, "not cut off"
    good.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "lab-dark-narrow.png")
    # an error: the message, an expandable traceback, a caption that no longer says computing
    bad.locator(".fw-thumb[data-index='0']").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.famwidget')[1].dataset.state === 'error'"
    )
    assert "Dimension(99)" in bad.locator(".fw-error .fw-error-text").text_content()
    bad.locator(".fw-error details summary").click()
    assert (
        "Traceback (most recent call last)" in bad.locator(".fw-error details pre").text_content()
    )
    caption = bad.locator(".fw-caption").text_content()
    assert "failed" in caption and "computing" not in caption
    bad.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "lab-dark-error.png")


def _luminance(css: str) -> float:
    r, g, b = (float(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def check_large_gallery(page: Page, root) -> None:
    """64 images: a scroll area of bounded height, the view in sight after a click far down,
    a filter by label, arrow keys and Enter."""
    gallery = root.locator(".fw-gallery")
    assert gallery.get_attribute("data-count") == "64"
    assert gallery.bounding_box()["height"] <= 330
    click_thumb_and_wait(page, 60)
    view = root.locator("canvas.fw-view").bounding_box()
    height = page.viewport_size["height"]
    assert view["y"] + view["height"] > 0 and view["y"] < height, "the view stays in sight"
    root.locator(".fw-filter").fill("person 6")
    shown = root.locator(".fw-thumb:not([hidden])")
    assert shown.count() == 5  # person 6, 60..63
    assert root.locator(".fw-gallery-count").text_content() == "5 of 64 images"
    root.locator(".fw-filter").fill("")
    root.locator(".fw-thumb[data-index='60']").focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("() => document.activeElement.dataset.index") == "61"
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => { const r = document.querySelector('.famwidget');"
        " return r.dataset.state === 'ready' && r.querySelector('.fw-caption')"
        ".textContent.startsWith('person 61 ·'); }"
    )
