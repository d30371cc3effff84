"""The Explorer's kernel side: clicks, traits on the wire, caching, errors, standalone pages."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch

import famwidget as fw
from famwidget.widget import standalone


@pytest.fixture
def explorer(tiny_embedding, images):
    w = fw.Explorer(tiny_embedding, images, labels=list("abcde"))
    yield w
    w.close()


def test_initial_state(explorer):
    assert explorer.state == "idle" and explorer.selected == -1 and explorer.explanation is None
    assert explorer.gallery["n"] == 5 and explorer.gallery["captions"] == list("abcde")
    assert len(explorer.thumbs) == 5 * explorer.gallery["h"] * explorer.gallery["w"] * 3
    assert explorer.layer == "body" and "grad-fam" in explorer.methods
    assert "body.3" in explorer.layers
    assert "mountStandalone" in explorer._esm and explorer._esm == fw.widget.explorer.bundle()


def test_select_sends_binary_heatmap_of_that_image(explorer, tiny_embedding, images):
    exp = explorer.select(2)
    assert explorer.state == "ready" and explorer.selected == 2 and explorer.progress == 1.0
    expected = fw.explain(tiny_embedding, images[2])
    assert torch.allclose(exp.heatmap, expected.heatmap, atol=1e-6)
    heat = np.frombuffer(explorer.heatmap, np.uint8).reshape(16, 16)
    assert np.abs(heat / 255.0 - expected.numpy()[0]).max() <= 0.5 / 255 + 1e-6
    assert explorer.view["index"] == 2 and explorer.view["caption"].startswith("c · grad-fam")
    assert explorer.channel_info["k"] == 12 and len(explorer.channels) == 12 * 8 * 8


def test_click_message_explains_in_worker(explorer):
    explorer._on_message(explorer, {"type": "select", "index": 4}, [])
    explorer.wait(10)
    assert explorer.selected == 4 and explorer.state == "ready"
    explorer._on_message(explorer, {"type": "select", "index": 99}, [])  # ignored, no crash
    assert explorer.selected == 4


def test_method_change_re_explains_and_caches(explorer):
    explorer.select(1)
    fam = bytes(explorer.heatmap)
    explorer.method = "grad-cam"
    explorer.wait(10)
    assert explorer.explanation.method == "grad-cam" and explorer.state == "ready"
    explorer.method = "grad-fam"
    explorer.wait(10)
    assert bytes(explorer.heatmap) == fam
    assert {(1, "grad-fam", "body"), (1, "grad-cam", "body")} <= set(explorer._cache)


def test_error_shows_in_widget_and_kernel_goes_on(tiny_embedding, images):
    bad = fw.Explorer(tiny_embedding, images, target=fw.targets.Dimension(99))
    with pytest.raises(ValueError, match="Dimension"):
        bad.select(0)
    assert bad.state == "error" and "Dimension(99)" in bad.error
    bad.close()
    good = fw.Explorer(tiny_embedding, images)
    assert good.select(0) is not None and good.state == "ready"
    good.close()


def test_bad_arguments(tiny_embedding, images):
    with pytest.raises(ValueError, match="got 2 labels for 5 images"):
        fw.Explorer(tiny_embedding, images, labels=[1, 2])
    with pytest.raises(ValueError, match="unknown method"):
        fw.Explorer(tiny_embedding, images, method="nope")
    with pytest.raises(TypeError, match="preprocess="):
        fw.Explorer(tiny_embedding, [np.zeros((16, 16, 3), np.uint8)])
    with pytest.raises(IndexError, match="out of range"):
        fw.Explorer(tiny_embedding, images).select(7)


def test_raw_images_with_preprocess(tiny_embedding):
    raw = [np.full((16, 16, 3), v, np.uint8) for v in (10, 200)]
    prep = lambda im: torch.from_numpy(im).permute(2, 0, 1).float() / 255  # noqa: E731
    w = fw.Explorer(tiny_embedding, raw, preprocess=prep)
    w.select(1)
    assert np.frombuffer(w.image, np.uint8).min() == 200
    w.close()


def test_png_in_mimebundle_after_select(explorer):
    explorer.select(0)
    data = explorer._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data
    assert "application/vnd.jupyter.widget-view+json" in data
    assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_to_html_embeds_state_and_every_explanation(explorer, tmp_path):
    explorer.select(3)
    path = explorer.to_html(tmp_path / "page.html", methods=["grad-fam", "grad-cam"])
    text = path.read_text()
    assert "</script" not in text.split('id="fw-bundle">')[1].split("</script>")[0]
    states = json.loads(re.search(r'id="fw-states">(.*?)</script>', text, re.S).group(1))
    state = states["models"]["page"]
    assert state["traits"]["selected"] == 3 and state["traits"]["state"] == "ready"
    keys = set(state["explanations"])
    assert keys == {f"{m}|body|{i}" for m in ("grad-fam", "grad-cam") for i in range(5)}
    ref = state["explanations"]["grad-fam|body|3"]["heatmap"]["$blob"]  # the page's image table
    heat = base64.b64decode(states["blobs"][ref])
    assert heat == bytes(explorer.heatmap)
    with pytest.raises(ValueError, match="not offered"):
        standalone.write_page(explorer, tmp_path / "x.html", ["fixations-nope"])


def test_interpretation_method_shows_its_features_as_channels(tiny_embedding):
    torch.manual_seed(0)
    x = torch.rand(24, 3, 16, 16)
    labels = (x[:, 0].mean(dim=(1, 2)) > x[:, 2].mean(dim=(1, 2))).long()
    interpreter = fw.Interpreter(tiny_embedding, tau=5).fit(x, labels)
    w = fw.Explorer(tiny_embedding, x[:4], interpreter=interpreter, method="vebi")
    exp = w.select(1)
    assert w.methods[-1] == "vebi" and exp.method == "vebi"
    found = exp.features[0]
    assert 1 <= len(found) <= 3 and w.channel_info["k"] == 3
    shown = [n for n in w.channel_info["names"] if n != "-"]
    assert sorted(shown) == sorted(f"{layer}:{channel}" for layer, channel, _ in found)
    assert len(w.channels) == 3 * 16 * 16  # the features' maps at image resolution
    w.close()
    with pytest.raises(ValueError, match="needs interpreter="):
        fw.Explorer(tiny_embedding, x[:4], method="vebi")


def test_fixations_points_travel_as_uint16_pairs(tiny_embedding, images):
    w = fw.Explorer(tiny_embedding, images, method="fixations", target=fw.targets.Embedding())
    exp = w.select(0)
    sent = np.frombuffer(w.points, "<u2").reshape(-1, 2)
    assert len(sent) == len(exp.points[0]) > 0
    assert np.array_equal(sent, exp.points[0].numpy())
    assert w.channel_info["k"] == 0  # fixations have no channel weights
    w.method = "grad-fam"
    w.wait(10)
    assert w.points == b""
    w.close()


def test_classifier_thumbnails_show_prediction_and_mark_misses():
    model = fw.zoo.flower_net()
    ds = fw.data.flowers(6, seed=9)
    labels = [ds.classes[i] for i in ds.labels]
    labels[0] = ds.classes[(ds.labels[0] + 1) % 6]  # one wrong label: a miss
    w = fw.Explorer(model, model.preprocess.batch(ds.images), labels=labels, classes=ds.classes)
    caps, marks = w.gallery["captions"], w.gallery["marks"]
    assert marks[0] == "miss" and marks[1:] == ["match"] * 5
    assert re.fullmatch(rf"{labels[1]} → {labels[1]} (0\.\d\d|1\.00)", caps[1])
    with pytest.raises(ValueError, match="has 6 outputs but classes= names 2"):
        fw.Explorer(model, model.preprocess.batch(ds.images), classes=["a", "b"])
    w.close()


def test_a_superseded_result_never_reaches_the_screen(explorer):
    """Image 0 is cached; image 1 is computing; a click back on 0 wins even if 1 finishes."""
    import threading

    explorer.select(0)
    started, release = threading.Event(), threading.Event()
    build = explorer._build

    def slow_build(key, stale, stream=True):
        started.set()
        assert release.wait(10)
        return build(key, stale, stream)

    explorer._build = slow_build
    explorer.select(1, wait=False)
    assert started.wait(10)
    assert explorer.view["index"] == 1 and explorer.heatmap == b""  # the new image, no old map
    explorer.select(0, wait=False)  # cached: on screen at once
    release.set()
    explorer.wait(10)
    assert explorer.selected == 0 and explorer.view["index"] == 0
    assert explorer.state == "ready" and explorer._explanation_index == 0
    assert (1, "grad-fam", "body") in explorer._cache  # computed, cached, not shown


def test_png_blends_the_image_that_was_explained(explorer):
    """While image 1 computes, the PNG still shows image 0 with image 0's heatmap."""
    import io
    import threading

    from PIL import Image

    explorer.select(0)
    release = threading.Event()
    build = explorer._build
    explorer._build = lambda key, stale, stream=True: release.wait(10) and build(key, stale)
    explorer.select(1, wait=False)
    png = Image.open(io.BytesIO(base64.b64decode(explorer.png()))).convert("RGB")
    release.set()
    explorer.wait(10)
    expected = explorer._cache[(0, "grad-fam", "body")][1].overlay(explorer._shown[0])
    assert np.array_equal(np.asarray(png), np.asarray(expected))


def test_to_html_sends_nothing_to_the_live_widget(tiny_embedding, images, tmp_path):
    w = fw.Explorer(tiny_embedding, images, method="score-fam", batch_size=4)
    w.select(2)
    sent = []
    w.send = lambda content, buffers=None: sent.append(content)
    w.to_html(tmp_path / "page.html")
    assert sent == [] and w.selected == 2
    w.close()


def test_every_message_stays_under_one_megabyte():
    """Colab drops larger comm messages: big inputs and big galleries are sized to fit."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU())
    w = fw.Explorer(model, torch.rand(3, 3, 600, 640))
    sizes = []
    w._send = lambda msg, buffers=None: sizes.append(
        len(json.dumps(msg)) + sum(len(bytes(b)) for b in buffers or [])
    )
    exp = w.select(1)
    assert sizes and max(sizes) < 1_000_000
    assert (w.view["h"], w.view["w"]) == (480, 512) and len(w.heatmap) == 480 * 512
    assert exp.heatmap.shape == (1, 600, 640)  # the Explanation keeps the input resolution
    many = fw.Explorer(model, torch.rand(400, 3, 32, 32))
    assert len(many.thumbs) < 500_000 and many.gallery["h"] < 32
    w.close()
    many.close()


def test_every_answer_tells_the_browser_to_show_the_state(explorer):
    """The browser shows "computing" at every click, also on the image already on screen,
    where no trait changes: the kernel answers each request with a "state" message."""
    explorer.select(2)
    sent = []
    explorer.send = lambda content, buffers=None: sent.append(content)
    explorer._on_message(explorer, {"type": "select", "index": 2}, [])
    explorer.wait(10)
    assert sent == [{"type": "state"}] and explorer.state == "ready"


def test_trait_contract_file_matches_the_classes():
    """traits.json (read by tests/js/traits.test.js against js/traits.js) is the classes' own."""
    from famwidget.widget import traits

    written = json.loads(traits.PATH.read_text())
    assert written == traits.contract(), "run `python -m famwidget.widget.traits` to update it"
    assert written["traceback"] == "string" and written["pair_image"] == "bytes"


def test_colormap_alpha_and_threshold_are_validated(explorer):
    import traitlets

    with pytest.raises(traitlets.TraitError, match="colormap 'rainbow'.*jet, turbo"):
        explorer.colormap = "rainbow"
    with pytest.raises(traitlets.TraitError, match=r"alpha must lie in \[0, 1\]"):
        explorer.alpha = 1.5
    with pytest.raises(traitlets.TraitError, match=r"threshold must lie in \[0, 1\]"):
        explorer.threshold = -0.1
    explorer.colormap, explorer.alpha = "viridis", 0.0
    assert (explorer.colormap, explorer.alpha) == ("viridis", 0.0)


def test_view_names_what_is_on_screen(explorer):
    assert explorer.gallery["image"] == [16, 16]
    explorer.select(1, wait=False)
    explorer.wait(10)
    view = explorer.view
    assert view["label"] == "b" and view["method"] == "grad-fam" and view["layer"] == "body"
    assert view["target"] == "Embedding()" and view["score"] > 0 and "pending" not in view


def test_error_sends_traceback_logs_it_and_caption_stops_computing(tiny_embedding, images, caplog):
    bad = fw.Explorer(tiny_embedding, images, target=fw.targets.Dimension(99))
    with caplog.at_level("ERROR", logger="famwidget.widget"), pytest.raises(ValueError):
        bad.select(0)
    assert bad.traceback.startswith("Traceback (most recent call last)")
    assert "Dimension(99)" in bad.traceback.splitlines()[-1]
    assert bad.view["failed"] == "grad-fam" and bad.view["pending"] is False
    assert any("Traceback" in r.getMessage() for r in caplog.records)
    bad.target = None
    bad._target = None
    assert bad.select(1) is not None and bad.traceback == "" and bad.error == ""
    bad.close()


def test_cancel_stops_score_fam_between_batches(tiny_embedding, images):
    w = fw.Explorer(tiny_embedding, images, method="score-fam", batch_size=2)
    w.stream_interval = 0
    sent = []

    def send(content, buffers=None):
        sent.append(content)
        if content.get("type") == "partial" and len(sent) == 1:
            w._on_message(w, {"type": "cancel"}, [])  # the Cancel button, after the first batch

    w.send = send
    w.select(3, wait=False)
    w.wait(10)
    partial = [m for m in sent if m.get("type") == "partial"]
    assert len(partial) == 1 and partial[0]["progress"] < 0.5  # 12 channels in batches of 2
    assert w.state == "idle" and w.view["cancelled"] == "score-fam" and w.explanation is None
    assert (3, "score-fam", "body") not in w._cache  # a cancelled map is never cached
    assert sent[-1] == {"type": "state"}
    assert w.select(3) is not None and w.state == "ready"  # a later click explains it again
    w.cancel()  # nothing computing: nothing changes
    assert w.state == "ready"
    w.close()
