"""The kernel side of large galleries and of the compare view (``widget/thumbnails.py``,
``widget/compare.py``): thumbnails in binary pages on demand, every offered method on one image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import famwidget as fw
from famwidget.widget import compare, standalone, thumbnails, wire


@pytest.fixture
def sent():
    """Record what an Explorer sends as custom messages: [(content, buffers)]."""
    return []


def spy(widget, sent):
    widget.send = lambda content, buffers=None: sent.append((content, list(buffers or [])))
    return widget


def test_small_galleries_send_every_thumbnail_up_front(tiny_embedding, images):
    w = fw.Explorer(tiny_embedding, images)
    assert not w.gallery.get("paged")
    assert len(w.thumbs) == 5 * w.gallery["h"] * w.gallery["w"] * 3
    w.close()


def test_large_gallery_sends_pages_on_demand_as_binary(tiny_embedding, sent):
    torch.manual_seed(0)
    n = thumbnails.INLINE_MAX + 300
    x = torch.rand(n, 3, 12, 8)
    w = spy(fw.Explorer(tiny_embedding, x), sent)
    info = w.gallery
    assert w.thumbs == b"" and info["paged"] is True and info["n"] == n
    assert (info["h"], info["w"]) == (12, 8)  # never larger than the images
    size = info["page_size"]
    assert info["pages"] == -(-n // size) >= 2
    last = info["pages"] - 1
    w._on_message(w, {"type": "thumbs", "page": last}, [])
    content, buffers = sent[-1]
    assert content == {"type": "thumbs", "page": last, "start": last * size,
                       "count": n - last * size, "h": 12, "w": 8}  # fmt: skip
    assert len(buffers) == 1 and isinstance(buffers[0], bytes)
    got = np.frombuffer(buffers[0], np.uint8).reshape(content["count"], 12, 8, 3)
    expected = (x[-1].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.abs(got[-1].astype(int) - expected).max() <= 1  # the last image's own pixels
    assert w.state == "idle" and w.error == ""
    w.close()


def test_pages_stay_under_the_message_limit_and_bad_requests_say_why(sent):
    shown = np.zeros((2000, 300, 150, 3), np.uint8)
    pages = thumbnails.Thumbnails(shown)
    assert (pages.h, pages.w) == (thumbnails.PAGED_HEIGHT, 32)
    content, data = pages.page(0)
    assert len(data) + len(json.dumps(content)) < wire.MESSAGE_LIMIT
    assert content["count"] == pages.page_size and len(data) == pages.page_size * 64 * 32 * 3
    with pytest.raises(ValueError, match=r"int in 0\.\.\d+ .*got 99999"):
        pages.page(99999)
    with pytest.raises(ValueError, match="got True"):
        pages.page(True)
    with pytest.raises(ValueError, match=r"\(N,H,W,3\) uint8"):
        thumbnails.Thumbnails(np.zeros((3, 4, 4), np.uint8))


def test_a_bad_page_request_is_refused_in_the_error(tiny_embedding):
    w = fw.Explorer(tiny_embedding, torch.rand(thumbnails.INLINE_MAX + 1, 3, 8, 8))
    w._on_message(w, {"type": "thumbs", "page": "first"}, [])
    assert w.state == "error" and "thumbnail page must be an int in 0..2" in w.error
    w.close()


def test_offline_page_embeds_every_thumbnail_once(tiny_embedding, tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "INLINE_MAX", 4)
    torch.manual_seed(2)
    w = fw.Explorer(tiny_embedding, torch.rand(6, 3, 8, 8))
    assert w.gallery["paged"] is True
    blobs = standalone.Blobs()
    payload = standalone.page_payload(w, ["grad-fam"], blobs)
    traits = payload["traits"]
    assert traits["gallery"]["paged"] is False and traits["gallery"]["n"] == 6
    data = blobs.table[traits["thumbs"]["$blob"]]
    assert len(__import__("base64").b64decode(data)) == 6 * 8 * 8 * 3
    w.close()


def test_compare_explains_every_offered_method_on_one_scale(tiny_embedding, images, sent):
    w = spy(fw.Explorer(tiny_embedding, images, methods=["grad-fam", "score-fam"]), sent)
    w.select(3)
    answer = w.compare()
    assert answer["index"] == 3 and answer["status"] == "ready"
    assert [c["method"] for c in answer["cells"]] == ["grad-fam", "score-fam"]
    assert answer["scale"] == compare.SCALE and "one colour scale" in answer["scale"]
    content, buffers = sent[-1]
    assert content is answer and len(buffers) == 3
    h, w_ = answer["h"], answer["w"]
    assert len(buffers[0]) == h * w_ * 3
    maps = [np.frombuffer(b, np.uint8).reshape(h, w_) for b in buffers[1:]]
    expected = fw.explain(tiny_embedding, images[3], "score-fam").heatmap[0].numpy()
    assert np.abs(maps[1] / 255 - expected).max() <= 0.5 / 255 + 1e-4
    assert not np.array_equal(maps[0], maps[1])
    progress = [c for c, _ in sent if c.get("status") == "computing"]
    assert [c["method"] for c in progress if "progress" not in c] == ["grad-fam", "score-fam"]
    # cached like the rest: picking a compared method shows it with no new computation
    assert (3, "score-fam", w.layer) in w._cache
    w.close()


def test_compare_is_refused_while_computing_and_cancel_stops_only_it(tiny_embedding, images, sent):
    w = spy(fw.Explorer(tiny_embedding, images), sent)
    w.state = "computing"
    assert compare.request(w, 0) is None
    assert sent[-1][0]["status"] == "refused" and "still being computed" in sent[-1][0]["error"]
    w.state = "ready"
    assert compare.cancel(w) is False  # nothing to cancel
    with pytest.raises(ValueError, match=r"int in 0\.\.4, got 7"):
        w.compare(7)
    release = __import__("threading").Event()
    w._worker.submit(lambda stale: release.wait(5))  # keep the worker busy
    future = compare.request(w, 1)
    assert compare.cancel(w) is True and sent[-1][0]["status"] == "cancelled"
    release.set()
    w.wait(5)
    assert future.cancelled() or future.exception() is not None
    assert not any(c.get("status") == "ready" for c, _ in sent)
    w.close()


def test_compare_fails_per_cell_and_leaves_the_others(tiny_embedding, images, sent):
    w = spy(fw.Explorer(tiny_embedding, images, methods=["grad-fam", "score-fam"]), sent)
    original = w._explain_one

    def broken(index, image, method, *args, **kwargs):
        if method == "score-fam":
            raise RuntimeError("out of memory (simulated)")
        return original(index, image, method, *args, **kwargs)

    w._explain_one = broken
    answer = w.compare(0)
    cells = {c["method"]: c for c in answer["cells"]}
    assert cells["score-fam"]["error"] == "RuntimeError: out of memory (simulated)"
    assert cells["grad-fam"]["error"] is None
    assert sent[-1][1][2] == b"" and len(sent[-1][1][1]) == answer["h"] * answer["w"]
    w.close()


def test_compare_message_fits_for_large_views():
    rgb = np.zeros((480, 512, 3), np.uint8)
    maps = [torch.rand(480, 512) for _ in range(6)]
    cells = [{"method": f"m{i}"} for i in range(6)]
    content, buffers = compare.encode(rgb, maps, cells, 0, "layer4")
    assert max(content["h"], content["w"]) == compare.COMPARE_SIDE
    assert sum(map(len, buffers)) + len(json.dumps(content)) < wire.MESSAGE_LIMIT
