"""Exported pages (famwidget.widget.standalone): each image stored once, normal file modes."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest
import torch

import famwidget as fw
from famwidget.widget import wire
from famwidget.widget.standalone import Blobs, page_html, page_sizes, page_traits, write_text


def _state(text: str) -> dict:
    found = re.search(r'<script type="application/json" id="fw-states">(.*?)</script>', text, re.S)
    return json.loads(found.group(1).replace("<\\/", "</"))


@pytest.fixture
def reid(tiny_embedding, images, one_thread):
    torch.manual_seed(2)
    widget = fw.ReIDExplorer(tiny_embedding, torch.rand(3, 16, 16), images[:4])
    widget.select(0)
    yield widget
    widget.close()


def test_blobs_store_each_value_once():
    blobs = Blobs()
    a, b = blobs.ref(b"\x00\x01"), blobs.ref(b"\xff")
    assert blobs.ref(b"\x00\x01") == a != b
    assert blobs.table == [
        base64.b64encode(b"\x00\x01").decode(),
        base64.b64encode(b"\xff").decode(),
    ]
    assert blobs.inlined == 2 * len(blobs.table[0]) + len(blobs.table[1])
    assert blobs.value(bytearray(b"\xff")) == b and blobs.value("text") == "text"


def test_each_image_is_in_the_page_once(reid):
    methods = ["grad-fam", "score-fam"]
    text, blobs = page_html(reid, methods)
    shown = [wire.encode_image(rgb) for rgb in reid._shown] + [wire.encode_image(reid._query_rgb)]
    state = _state(text)
    thumbs = state["blobs"][state["models"]["page"]["traits"]["thumbs"]["$blob"]]
    for rgb in shown:
        encoded = base64.b64encode(rgb).decode()
        assert state["blobs"].count(encoded) == 1
        # once in the table, and otherwise only inside the thumbnail strip (same size here)
        assert text.count(encoded) == 1 + thumbs.count(encoded)
    explanations = state["models"]["page"]["explanations"]
    assert len(explanations) == 4 * len(methods) * 2  # images x methods x pair targets
    for name, view in explanations.items():
        index = int(name.split("|")[2])
        image = base64.b64decode(state["blobs"][view["image"]["$blob"]])
        query = base64.b64decode(state["blobs"][view["pair_image"]["$blob"]])
        assert image == shown[index] and query == shown[-1], name
        heat = base64.b64decode(state["blobs"][view["heatmap"]["$blob"]])
        assert len(heat) == 16 * 16
    assert blobs.inlined > 2 * blobs.stored()


def test_page_sizes_measure_the_table(reid, tmp_path):
    path = reid.to_html(tmp_path / "page.html", methods=["grad-fam", "score-fam"])
    sizes = page_sizes(path)
    _, blobs = page_html(reid, ["grad-fam", "score-fam"])
    assert sizes["bytes"] == path.stat().st_size
    assert sizes["table"] == blobs.stored()
    # each extra reference would have embedded the bytes again (base64 plus its JSON wrapper)
    assert sizes["without_table"] - sizes["bytes"] >= blobs.inlined - blobs.stored() - 1000


def test_page_embeds_every_synced_trait_of_the_class(reid):
    names = page_traits(reid)
    assert {"image", "heatmap", "pair_image", "pair_target", "alpha"} <= set(names)
    assert not {"_esm", "layout", "_model_name"} & set(names)
    traits = _state(page_html(reid, ["grad-fam"])[0])["models"]["page"]["traits"]
    assert set(traits) == set(names)
    assert traits["layers"] == [reid.layer] and traits["methods"][0] == reid.method


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_get_the_mode_of_a_normal_file(tmp_path, mask):
    before = os.umask(mask)
    try:
        path = write_text(tmp_path / "sub" / "page.html", "<p>hi</p>")
        plain = tmp_path / "plain.html"
        plain.write_text("x")
    finally:
        os.umask(before)
    assert path.read_text() == "<p>hi</p>"
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask == plain.stat().st_mode & 0o777
    assert [p.name for p in path.parent.iterdir()] == ["page.html"]  # no temporary file left


def test_unknown_method_is_refused(reid):
    with pytest.raises(ValueError, match="not offered by this Explorer"):
        page_html(reid, ["no-such-method"])
