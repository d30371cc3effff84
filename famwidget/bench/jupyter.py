"""A JupyterLab server on loopback for the browser benchmark and the browser tests."""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]  # fmt: skip


LOOPBACK = "127.0.0.1"
"""The only address the token-less server binds: no other machine can reach it."""


@contextlib.contextmanager
def jupyterlab(root: pathlib.Path, timeout: float = 120, ip: str = LOOPBACK) -> Iterator[str]:
    """Start JupyterLab (it also serves Notebook 7) over ``root``; yields its URL.

    The server has no token and no password (the tests and the benchmark drive it), so it
    binds ``127.0.0.1`` only: any other ``ip`` is refused before anything starts.
    """
    if ip != LOOPBACK:
        raise ValueError(
            f"this JupyterLab has no token or password, so it binds {LOOPBACK} only, not {ip!r}: "
            "run `jupyter lab` yourself (with its token) to serve other addresses"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = root / "jupyter.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             "--ServerApp.token=", "--ServerApp.password=", f"--port={port}", "--ip=127.0.0.1",
             f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            stdout=log, stderr=subprocess.STDOUT, cwd=root,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while not _answers(f"{url}/api/status"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def notebook_page(
    cells: Sequence[str], name: str = "bench.ipynb", before_open: Callable | None = None
) -> Iterator:
    """A notebook of code ``cells`` opened in JupyterLab in headless Chromium, its kernel
    idle (the cells not run yet); yields the Playwright page. ``before_open(page)`` runs
    before the notebook is opened (to watch its websockets). Closes it all on exit."""
    import nbformat
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        nbformat.write(nb, root / name)
        with jupyterlab(root) as url, sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                if before_open is not None:
                    before_open(page)
                page.goto(f"{url}/lab/tree/{name}")
                wait_for_kernel(page)
                yield page
            finally:
                browser.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_for_kernel(page, timeout: float = 120_000) -> None:
    """Wait until the notebook's kernel is started and idle (the indicator alone is not enough)."""
    page.wait_for_function(  # the status bar and the toolbar may each carry an indicator
        "() => [...document.querySelectorAll('.jp-Notebook-ExecutionIndicator')]"
        ".some(e => e.dataset.status === 'idle') &&"
        " [...document.querySelectorAll('.jp-Toolbar-kernelName')]"
        ".some(e => /Python/.test(e.textContent))",
        timeout=timeout,
    )


def run_all(page, attempts: int = 3) -> None:
    """Run every cell through the Run menu; tries again if no cell started (a fresh server
    can swallow the first click while it is still settling)."""
    started = (
        "() => [...document.querySelectorAll('.jp-InputPrompt')]"
        ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"
    )
    for attempt in range(attempts):
        page.click("text=Run >> nth=0")
        page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
        try:
            page.wait_for_function(started, timeout=20_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
