"""A widget that lives for hours beside the user's model: bounded memory, newest click wins under
load, closing mid-computation, corrupted wire messages; the model comes back bit-identical."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import torch
from torch import nn

import famwidget as fw
from famwidget.widget.cache import DEFAULT_CACHE_BYTES
from famwidget.widget.worker import Closed


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        "training": [m.training for m in model.modules()],
        "flags": [(p.requires_grad, p.grad) for p in model.parameters()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    assert after["hooks"] == before["hooks"] and after["training"] == before["training"]
    assert all(
        a[0] == b[0] and a[1] is b[1] for a, b in zip(after["flags"], before["flags"], strict=True)
    )


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Slow(nn.Module):
    """Wraps a model; each forward sleeps ``delay`` seconds and is counted."""

    def __init__(self, inner: nn.Module, delay: float) -> None:
        super().__init__()
        self.inner = inner
        self.delay = delay
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        time.sleep(self.delay)
        return self.inner(x)


def small_cnn() -> nn.Module:
    """The issue's long-running kernel: a 3-conv CNN on 48x48 images (112 KiB a cache entry)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def test_a_thousand_explanations_keep_memory_bounded(one_thread):
    """Default settings (cache_bytes=16 MiB): 1,000 clicks grow resident memory < 50 MB."""
    from ipywidgets.widgets.widget import _instances

    model = small_cnn()
    torch.manual_seed(2)
    w = fw.Explorer(model, torch.rand(1000, 3, 48, 48))
    bound = DEFAULT_CACHE_BYTES
    before, threads = snapshot(model), threading.active_count()
    w.select(0)
    w.select(1)
    gc.collect()
    start, held = rss_mb(), []
    for i in range(1000):
        w._handle_custom_msg({"type": "select", "index": i}, [])  # what a click sends
        w.wait(30)
        if i % 100 == 99:
            held.append((w._cache.nbytes, len(w._cache)))
    gc.collect()
    grown = rss_mb() - start
    assert w.selected == 999 and w.state == "ready"
    assert all(nbytes <= bound for nbytes, _ in held)
    assert 50 < held[-1][1] < 1000  # least recently used entries went out, recent ones stay
    layer = w.layer
    assert (999, "grad-fam", layer) in w._cache and (0, "grad-fam", layer) not in w._cache
    assert grown < 50, f"resident memory grew by {grown:.1f} MB over 1000 explanations"
    assert threading.active_count() == threads
    assert_unchanged(model, before)
    model_id = w.model_id
    assert model_id in _instances and w._msg_callbacks.callbacks
    w.close()
    assert w._worker.close(timeout=10) and w.comm is None
    assert threading.active_count() == threads - 1  # the worker thread is gone
    assert model_id not in _instances  # no comm left
    assert not w._msg_callbacks.callbacks  # no message handler left
    assert_unchanged(model, before)


def test_select_after_close_says_the_widget_is_closed(tiny_embedding, images):
    w = fw.Explorer(tiny_embedding, images)
    before = snapshot(tiny_embedding)
    w.select(0)
    w.close()
    with pytest.raises(Closed, match="the widget is closed: close\\(\\) ended its worker thread"):
        w.select(1)
    w.method = "score-fam"  # no observer is left: nothing is requested
    assert w.selected == 0 and w._explanation_index == 0
    assert_unchanged(tiny_embedding, before)


def test_views_carry_the_newest_click_id_of_the_page(tiny_embedding, images):
    """The page numbers its clicks; every view says the newest one the kernel had seen, so the
    page can ignore an older click's view (js/work.js clickIds)."""
    w = fw.Explorer(tiny_embedding, images)
    w._handle_custom_msg({"type": "select", "index": 1, "request": "p:1"}, [])
    w.wait(30)
    assert w.view["index"] == 1 and w.view["request"] == "p:1" and w.state == "ready"
    w._handle_custom_msg({"type": "select", "index": 2, "request": "p:2"}, [])
    w.wait(30)
    assert w.view["request"] == "p:2"
    w._handle_custom_msg({"type": "select", "index": 1, "request": "p:3"}, [])  # cached
    assert w.view["index"] == 1 and w.view["request"] == "p:3" and w.state == "ready"
    w.method = "score-fam"  # a method change keeps the newest click's id
    w.wait(60)
    assert w.view["method"] == "score-fam" and w.view["request"] == "p:3"
    w._handle_custom_msg({"type": "select", "index": 0, "request": "x" * 65}, [])  # too long
    w.wait(60)
    assert w.view["index"] == 0 and w.view["request"] == "p:3"
    w.close()


def test_twenty_clicks_a_second_end_on_the_last(tiny_embedding, images):
    model = Slow(tiny_embedding, delay=0.3)
    w = fw.Explorer(model, images, layer="inner.body")
    before = snapshot(model)
    built = []
    build = w._build
    w._build = lambda key, stale, stream=True: built.append(key) or build(key, stale, stream)
    clicks = [i % 5 for i in range(20)]  # ...3, 4, 0, 1, 2, 3, 4: the last click is on 4

    def click() -> None:
        for i in clicks:
            w._handle_custom_msg({"type": "select", "index": i}, [])
            time.sleep(0.05)

    clicker = threading.Thread(target=click)
    clicker.start()
    clicker.join(30)
    w.wait(30)
    assert w.selected == 4 and w.view["index"] == 4 and w.state == "ready"
    assert w._explanation_index == 4
    expected = fw.explain(tiny_embedding, images[4], layer="body")
    assert torch.allclose(w.explanation.heatmap, expected.heatmap, atol=1e-6)
    assert len(built) < len(clicks)  # superseded clicks were dropped, not queued
    assert_unchanged(model, before)
    w.close()


def test_closing_while_score_fam_runs_stops_its_worker(tiny_embedding, images):
    model = Slow(tiny_embedding, delay=0.02)
    w = fw.Explorer(model, images, layer="inner.body", method="score-fam", batch_size=1)
    before = snapshot(model)
    progressed = threading.Event()
    w.send = lambda content, buffers=None: progressed.set()  # a streamed partial map
    w.select(0, wait=False)
    assert progressed.wait(30)
    w.close()
    assert w._worker.close(timeout=10), "the worker thread did not end after close()"
    at_close = model.calls
    time.sleep(0.1)
    assert model.calls == at_close  # nothing runs after the thread ended
    assert at_close < 2 + 2 + 12 + 1  # probe, clean pass, baseline, 12 channels: cut short
    assert_unchanged(model, before)


BAD_MESSAGES = [
    "select",
    None,
    [],
    {},
    {"type": 5},
    {"type": "nope", "index": 1},
    {"type": "select"},
    {"type": "select", "index": "2"},
    {"type": "select", "index": True},
    {"type": "select", "index": 2.0},
    {"type": "select", "index": -1},
    {"type": "select", "index": 10**20},
    {"type": "select", "index": None},
    {"index": 1},
]


@pytest.mark.parametrize("content", BAD_MESSAGES, ids=[repr(m)[:30] for m in BAD_MESSAGES])
def test_a_corrupted_message_is_answered_with_an_error_and_the_kernel_goes_on(
    tiny_embedding, images, content
):
    w = fw.Explorer(tiny_embedding, images)
    before = snapshot(tiny_embedding)
    w.select(1)
    sent = []
    w.send = lambda message, buffers=None: sent.append(message)
    msg = {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    w._handle_msg(msg)  # the comm's entry point for messages from the page
    assert w.state == "error" and w.error.startswith("ignored a message from the page")
    assert "'select'" in w.error and "index" in w.error
    assert sent == [{"type": "state"}] and w.selected == 1
    assert w.select(3) is not None and w.state == "ready" and w.error == ""
    assert_unchanged(tiny_embedding, before)
    w.close()
