"""The widget in a real browser (JupyterLab + Chromium): what a user waits for.

Prints, measured in the page (``performance.now()``), not asserted:
- click → first heatmap on screen: a thumbnail click until the new heatmap is painted
  (Grad-FAM on the shipped re-ID net, a kernel round trip included; goal < 200 ms);
- hover → repaint: one pointer move over the image until the channel list and the canvas are
  redrawn (goal < 16 ms at p95);
- bytes per explanation on the wire, and the size of the minified bundle (goal < 60 KB);
- first, with no browser (:func:`headless`): Score-FAM clicked in an Explorer against
  ``fw.explain`` on the same image (goal: within 1.1x).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import statistics
import tempfile
import time

import nbformat

from ..widget.explorer import STATIC
from . import print_table
from .jupyter import CHROMIUM_ARGS, jupyterlab, run_all, wait_for_kernel

NOTEBOOK = """
import famwidget as fw
from famwidget.demo import reid_demo
demo = reid_demo(12)
w = fw.Explorer(demo.model, demo.gallery, display=demo.display, method="grad-fam")
w
"""

CLICK = """
async (index) => {
  const root = document.querySelector('.famwidget');
  const canvas = root.querySelector('canvas.fw-view');
  const before = canvas.toDataURL();
  const start = performance.now();
  root.querySelector(`.fw-thumb[data-index='${index}']`).click();
  await new Promise((resolve) => {
    const check = () => (root.dataset.state === 'ready' && canvas.toDataURL() !== before)
      ? resolve() : requestAnimationFrame(check);
    check();
  });
  await new Promise((r) => requestAnimationFrame(r));
  return performance.now() - start;
}
"""

HOVER = """
(n) => {
  const canvas = document.querySelector('.famwidget canvas.fw-view');
  const rect = canvas.getBoundingClientRect();
  const times = [];
  for (let i = 0; i < n; i++) {
    const x = rect.left + ((i * 37) % 100) / 100 * rect.width;
    const y = rect.top + ((i * 61) % 100) / 100 * rect.height;
    const start = performance.now();
    canvas.dispatchEvent(new MouseEvent('mousemove', {clientX: x, clientY: y, bubbles: true}));
    canvas.getContext('2d').getImageData(0, 0, 1, 1);  // wait for the pixels to be written
    times.push(performance.now() - start);
  }
  return times;
}
"""


def headless(quick: bool = False) -> None:
    """Score-FAM clicked in an Explorer with no browser vs ``fw.explain`` on the same image.

    Untrained ResNet-18 as an embedding net (``layer4``, 512 channels), one 224x224 photo
    (112x112 with ``quick``); interleaved rounds, medians: ``fw.explain`` in the main thread, with
    an ``on_progress`` callback (a partial map built after every batch), in a plain thread, and
    ``Explorer.select`` (the worker thread, partial maps streamed and encoded, the cache cleared
    before each round). Prints the table and the torch thread counts of both threads.
    """
    import threading

    import torch
    import torchvision

    from ..api import explain
    from ..widget import Explorer
    from .scorefam import structured_images

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    model.fc = torch.nn.Identity()
    x = structured_images(1, 112 if quick else 224)
    widget = Explorer(model, x, method="score-fam", layer="layer4", max_seconds=None)
    threads = widget._worker.submit(lambda stale: torch.get_num_threads()).result()

    def library() -> None:
        explain(model, x, "score-fam", layer="layer4", max_seconds=None)

    def library_progress() -> None:
        explain(
            model,
            x,
            "score-fam",
            layer="layer4",
            max_seconds=None,
            on_progress=lambda done, total, p: None,
        )

    def library_thread() -> None:
        worker = threading.Thread(target=library)
        worker.start()
        worker.join()

    def clicked() -> None:
        widget._cache.clear()
        widget.select(0)

    variants = {
        "fw.explain (main thread)": library,
        "fw.explain + on_progress": library_progress,
        "fw.explain in a thread": library_thread,
        "Explorer.select (worker, streaming)": clicked,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(2 if quick else 3):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    widget.close()
    base = statistics.median(times["fw.explain (main thread)"])
    rows = [
        [name, statistics.median(v), f"{statistics.median(v) / base:.2f}x",
         f"{min(v):.2f}-{max(v):.2f}"]
        for name, v in times.items()
    ]  # fmt: skip
    print(f"torch threads: main {torch.get_num_threads()}, worker {threads}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print_table(["Score-FAM, one image", "s (median)", "vs fw.explain", "range"], rows)


def run(args) -> None:
    from playwright.sync_api import sync_playwright

    headless(args.quick)

    bundle_kb = (STATIC / "widget.js").stat().st_size / 1024
    clicks: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        nbformat.write(nb, root / "bench.ipynb")
        with jupyterlab(root) as url, sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/lab/tree/bench.ipynb")
            wait_for_kernel(page)
            run_all(page)
            page.wait_for_selector(".famwidget .fw-thumb", timeout=120_000)
            rounds = 1 if args.quick else 3
            for _ in range(rounds):  # new images: nothing cached (first round), then cached
                for i in range(12):
                    clicks.append((i, page.evaluate(CLICK, i)))
            hovers = page.evaluate(HOVER, 50 if args.quick else 200)
            browser.close()
    first = [ms for k, (_, ms) in enumerate(clicks) if k < 12]
    cached = [ms for k, (_, ms) in enumerate(clicks) if k >= 12]
    sizes = _wire_bytes()
    hovers.sort()
    p95 = hovers[int(0.95 * (len(hovers) - 1))]
    rows = [
        ["click → heatmap, new image (ms, median)", statistics.median(first), "< 200"],
        ["click → heatmap, new image (ms, max)", max(first), ""],
    ]
    if cached:
        rows.append(["click → heatmap, cached (ms, median)", statistics.median(cached), ""])
    rows += [
        ["hover → repaint (ms, p95)", p95, "< 16"],
        ["hover → repaint (ms, median)", statistics.median(hovers), ""],
        ["bytes per explanation (image + heatmap + channels)", sizes["total"], "< 1 MB"],
        ["bundle (KB, minified)", bundle_kb, "< 60"],
    ]
    print_table(["measure", "value", "goal"], rows)
    print(json.dumps({"wire_bytes": sizes}))


def _wire_bytes() -> dict[str, int]:
    """The buffers of one re-ID explanation as the kernel sends them."""
    from ..demo import reid_demo
    from ..widget import Explorer

    demo = reid_demo(2)
    w = Explorer(demo.model, demo.gallery, display=demo.display)
    w.select(0)
    sizes = {"image": len(w.image), "heatmap": len(w.heatmap), "channels": len(w.channels)}
    sizes["json"] = len(json.dumps([w.view, w.channel_info]))
    sizes["total"] = sum(sizes.values())
    w.close()
    return sizes
