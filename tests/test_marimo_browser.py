"""The Explorer in marimo (a host whose widget model is not Backbone), clicked in Chromium.

marimo serves ``tests/marimo_app.py`` headless on 127.0.0.1; a click on a thumbnail must put the
explanation ON SCREEN: a canvas larger than 1x1 whose pixels change between two images, and a
caption. ``data-state`` alone is not enough: marimo once reached "ready" with an empty canvas.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import marimo  # noqa: F401  (a test dependency: a missing marimo fails, never skips)
import pytest
from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

APP = pathlib.Path(__file__).with_name("marimo_app.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def marimo_run(app: pathlib.Path, log: pathlib.Path, timeout: float = 120) -> Iterator[str]:
    """``marimo run APP --headless`` on a free loopback port, no token; yields its URL."""
    port = _free_port()
    env = {**os.environ, "MARIMO_SKIP_UPDATE_CHECK": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "marimo", "run", str(app), "--headless", "--host",
               "127.0.0.1", "--port", str(port), "--no-token", "--no-sandbox"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while not _answers(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"marimo did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def marimo_url(tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("marimo") / "marimo.log"
    with marimo_run(APP, log) as url:
        yield url


def _digest(root) -> str:
    """A hash of the pixels of the widget's canvas.fw-view (marimo renders in a shadow root:
    element handles reach it, ``document.querySelector`` does not)."""
    data = root.eval_on_selector(
        "canvas.fw-view",
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)",
    )
    assert len(data) > 4 * 16, f"the canvas shows {len(data) // 4} pixels: nothing on screen"
    return hashlib.sha1(bytes(data)).hexdigest()


def _set_alpha(root, value: float) -> None:
    root.eval_on_selector(
        "input.fw-alpha",
        "(el, v) => { el.value = String(v);"
        " el.dispatchEvent(new Event('input', {bubbles: true})); }",
        value,
    )


def _explain(page: Page, root, index: int, caption_part: str) -> str:
    """Click thumbnail ``index``; wait until it is explained ON SCREEN; return the caption."""
    root.eval_on_selector(f".fw-thumb[data-index='{index}']", "e => e.click()")
    page.wait_for_function(
        "([root, i, part]) => root.dataset.state === 'ready'"
        " && root.querySelector('.fw-thumb.fw-selected')?.dataset.index === String(i)"
        " && root.querySelector('canvas.fw-view').width > 1"
        " && root.querySelector('.fw-caption').textContent.includes(part)",
        arg=[root, index, caption_part],
        timeout=60_000,
    )
    return root.eval_on_selector(".fw-caption", "e => e.textContent")


def test_explorer_in_marimo(marimo_url, page: Page, screenshots):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(marimo_url)
    page.wait_for_selector(".famwidget .fw-thumb[data-index='5']", timeout=120_000)
    root = page.locator(".famwidget").element_handle()
    assert root.get_attribute("data-host") == "marimo", "marimo is recognised"

    caption = _explain(page, root, 1, "id 0")
    assert "grad-fam" in caption.lower(), caption
    width, height = root.eval_on_selector("canvas.fw-view", "c => [c.width, c.height]")
    assert (width, height) == (64, 128), f"the canvas is {width}x{height}, the image 64x128"
    _set_alpha(root, 0)
    plain = _digest(root)
    _set_alpha(root, 1)
    first = _digest(root)
    assert first != plain, "the heatmap is drawn over the image"

    _explain(page, root, 4, "id 2")
    assert _digest(root) != first, "another image shows another explanation"

    root.eval_on_selector(
        "select.fw-method",
        "s => { s.value = 'score-fam'; s.dispatchEvent(new Event('change', {bubbles: true})); }",
    )
    page.wait_for_function(
        "root => root.dataset.state === 'ready'"
        " && root.querySelector('.fw-caption').textContent.toLowerCase().includes('score-fam')",
        arg=root,
        timeout=60_000,
    )
    page.screenshot(path=screenshots / "marimo.png")
    assert errors == [], errors
