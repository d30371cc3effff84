"""The embedding map at scale: 50,000 points (``--quick``: 10,000; ``--smoke``: 1,000).

Prints, not asserted:
- PCA of N x 512 features on the device (exact: covariance + ``eigh``; median of 3), and one
  neighbour query (the list shown after a click);
- the bytes of the map (one binary buffer: xy float32, group uint16, score uint8);
- in Chromium (headless, Debian's), an offline page holding the map: first draw (from opening the
  page until the canvas has drawn every point; goal < 1 s), and the frame times of pan (drag) and
  zoom (wheel): each event handled and the canvas redrawn and flushed (``fwRedraw`` and a pixel
  read), p50 / p95 (goal p95 < 16 ms), plus the rAF interval p95 during a continuous pan.

``--smoke`` (CI): the same tables, rows and columns with 1,000 points (``SMOKE_N``), one PCA
and one query timed, 10 pan/zoom events and frames; its figures mean nothing.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import statistics
import tempfile
import time

import torch

from ..embedding import neighbours, pca
from ..widget.map_panel import encode_map
from . import print_table, seconds, smoke
from .jupyter import CHROMIUM_ARGS

SMOKE_N = 1_000

FRAMES = """
async ([kind, n]) => {
  const canvas = document.querySelector('canvas.fw-map');
  const ctx = canvas.getContext('2d');
  const box = canvas.getBoundingClientRect();
  const times = [];
  const at = (i) => ({ clientX: box.left + box.width / 2 + 40 * Math.sin(i / 5),
                       clientY: box.top + box.height / 2 + 30 * Math.cos(i / 7), bubbles: true });
  const fire = (type, i) => canvas.dispatchEvent(new PointerEvent(type, {...at(i), pointerId: 1}));
  if (kind === 'pan') fire('pointerdown', 0);
  for (let i = 1; i <= n; i++) {
    const start = performance.now();
    if (kind === 'pan') fire('pointermove', i);
    else canvas.dispatchEvent(new WheelEvent('wheel', { ...at(i), deltaY: i % 20 < 10 ? -60 : 60,
                                                        cancelable: true }));
    canvas.fwRedraw();
    ctx.getImageData(0, 0, 1, 1);  // the drawing is flushed, not only queued
    times.push(performance.now() - start);
    await new Promise((r) => setTimeout(r, 0));
  }
  if (kind === 'pan') fire('pointerup', n);
  return times;
}
"""

INTERVALS = """
async (n) => {  // a continuous drag, one pointer move per animation frame: frame-to-frame times
  const canvas = document.querySelector('canvas.fw-map');
  const box = canvas.getBoundingClientRect();
  const at = (i) => ({ clientX: box.left + box.width / 2 + 50 * Math.sin(i / 9),
                       clientY: box.top + box.height / 2, bubbles: true, pointerId: 2 });
  canvas.dispatchEvent(new PointerEvent('pointerdown', at(0)));
  const stamps = [];
  for (let i = 1; i <= n; i++) {
    canvas.dispatchEvent(new PointerEvent('pointermove', at(i)));
    stamps.push(await new Promise((r) => requestAnimationFrame(r)));
  }
  canvas.dispatchEvent(new PointerEvent('pointerup', at(n)));
  return stamps.slice(1).map((t, i) => t - stamps[i]);
}
"""

FIRST_DRAW = """<script>
(function watch() {
  const c = document.querySelector('canvas.fw-map');
  if (c && c.dataset.count === '{n}') { window.fwFirstDraw = performance.now(); return; }
  requestAnimationFrame(watch);
})();
</script>"""


def features_like(n: int, dim: int = 512, clusters: int = 20, seed: int = 0) -> torch.Tensor:
    """``(n, dim)`` float32 features in ``clusters`` Gaussian blobs (an embedding's shape)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g) * 2
    labels = torch.randint(clusters, (n,), generator=g)
    return (centres[labels] + torch.randn(n, dim, generator=g)).relu(), labels


def page(n: int, buffer: bytes, info: dict) -> str:
    """An offline page with only the map (the widget mounted on embedded traits)."""
    from ..widget.explorer import bundle
    from ..widget.standalone import Blobs, mount_point, mount_scripts

    blobs = Blobs()
    traits = {"map_points": blobs.ref(buffer), "map_info": info, "gallery": {"n": 0},
              "state": "idle", "view": {}, "selection": []}  # fmt: skip
    scripts = mount_scripts(bundle(), {"page": {"traits": traits, "explanations": {}}}, blobs)
    watch = FIRST_DRAW.replace("{n}", str(n))
    return f"<!doctype html><meta charset=utf-8><body>{mount_point('page')}{watch}{scripts}"


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args) -> None:
    from playwright.sync_api import sync_playwright

    tiny = smoke(args)
    n = SMOKE_N if tiny else 10_000 if args.quick else 50_000
    repeats, events = (1, 10) if tiny else (3, 120)
    device = torch.device(args.device)
    feats, labels = features_like(n)
    feats = feats.to(device)
    pca(feats[:100])  # warm-up
    times = [seconds(lambda: pca(feats), device) for _ in range(repeats)]
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1:  # a shared machine: one thread can be faster
        torch.set_num_threads(1)
        one = statistics.median(seconds(lambda: pca(feats), device) for _ in range(repeats))
        torch.set_num_threads(threads)
        print(f"PCA with 1 thread: {one:.3g} s (with {threads}: see the table)", flush=True)
    coords = pca(feats).coords
    unit = torch.nn.functional.normalize(feats, dim=1)  # as the widget keeps them
    query = statistics.median(
        seconds(lambda: neighbours(unit, 7, 10, normalized=True), device)
        for _ in range(1 if tiny else 5)
    )
    buffer, info = encode_map(coords, labels, feats.norm(dim=1))
    info.update(
        groups=[f"cluster {i}" for i in range(20)],
        group_name="cluster",
        colour_by=["cluster", "rank", "score"],
        score_name="feature norm",
        projection="pca",
    )
    print_table(
        ["points", "dim", f"PCA s (median of {repeats})", "neighbour query ms", "map bytes",
         "bytes/point"],
        [[n, feats.shape[1], statistics.median(times), 1000 * query, len(buffer), len(buffer) / n]],
    )  # fmt: skip
    if shutil.which("chromium") is None:
        print("no chromium on PATH: the browser figures are skipped", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "map.html"
        path.write_text(page(n, buffer, info), encoding="utf-8")
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS
            )
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            rows = []
            for attempt in range(3):  # a fresh load each time: first draw from the page's start
                start = time.perf_counter()
                tab.goto(path.as_uri())
                tab.wait_for_function("() => window.fwFirstDraw !== undefined", timeout=60_000)
                wall = time.perf_counter() - start
                first = tab.evaluate("() => window.fwFirstDraw")
                rows.append([f"load {attempt + 1}", first, 1000 * wall])
            print_table(["page", "first draw ms (in page)", "goto + draw ms (wall)"], rows)
            frames = []
            for kind in ("pan", "zoom"):
                ms = tab.evaluate(FRAMES, [kind, events])
                frames.append([kind, _p(ms, 0.5), _p(ms, 0.95), max(ms)])
            gaps = tab.evaluate(INTERVALS, 10 if tiny else 90)
            frames.append(["pan, rAF interval", _p(gaps, 0.5), _p(gaps, 0.95), max(gaps)])
            print_table(["frame", "p50 ms", "p95 ms", "max ms"], frames)
            count = tab.get_attribute("canvas.fw-map", "data-count")
            print(json.dumps({"points_drawn": int(count), "map_bytes": len(buffer)}), flush=True)
            browser.close()
