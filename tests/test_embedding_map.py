"""The map panel (famwidget/widget/map_panel.py) and fw.EmbeddingExplorer, without a browser."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import traitlets
from torch import nn

import famwidget as fw
from famwidget.embedding import features, pca
from famwidget.widget.map_panel import encode_map


def backbone() -> nn.Module:
    """A headless conv net (no class output): an embedding model."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip


@pytest.fixture
def pictures() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.rand(24, 3, 12, 12)


def decode(widget) -> dict[str, np.ndarray]:
    """The map buffer, read as js/map.js reads it."""
    info, raw = widget.map_info, widget.map_points
    n, k = info["n"], info["k"]
    out, at = {}, 0
    for name, dtype, count in [
        ("xy", "<f4", 2 * n),
        ("knn", "<u4", n * k),
        ("sim", "<f4", n * k),
        ("group", "<u2", n),
        ("score", "u1", n),
    ]:
        size = np.dtype(dtype).itemsize * count
        out[name] = np.frombuffer(raw[at : at + size], dtype=dtype)
        at += size
    assert at == len(raw)
    return out


def test_map_is_on_by_default_for_embedding_models_with_20_images(pictures, one_thread):
    model = backbone()
    on = fw.Explorer(model, pictures, labels=[f"c{i % 3}" for i in range(24)])
    assert on.map_info["n"] == 24 and on.map_info["colour_by"] == ["label", "rank", "score"]
    assert on.map_info["groups"] == ["c0", "c1", "c2"]
    few = fw.Explorer(model, pictures[:19])
    assert few.map_info == {} and few.map_points == b""
    classifier = nn.Sequential(model, nn.Linear(8, 3))
    assert fw.Explorer(classifier, pictures).map_info == {}
    assert fw.Explorer(classifier, pictures, map=True).map_info["n"] == 24
    for w in (on, few):
        w.close()


class NaNFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3)) * float("nan")


def test_a_default_map_that_cannot_be_made_warns_and_the_widget_still_works(pictures):
    with pytest.warns(UserWarning, match="no embedding map: .*non-finite"):
        w = fw.Explorer(NaNFeatures(), pictures)
    assert w.map_info == {} and w.gallery["n"] == 24
    w.close()
    with pytest.raises(ValueError, match="non-finite"):  # asked for: the error itself
        fw.Explorer(NaNFeatures(), pictures, map=True)


def test_map_buffer_holds_pca_coords_and_the_cosine_neighbours(pictures, one_thread):
    model = backbone()
    w = fw.Explorer(model, pictures, labels=[f"c{i % 3}" for i in range(24)], map=True)
    data = decode(w)
    feats = features(model, pictures)
    assert np.allclose(data["xy"].reshape(-1, 2), pca(feats).coords.numpy(), atol=1e-6)
    unit = F.normalize(feats.double(), dim=1)
    sim = unit @ unit.T
    sim.fill_diagonal_(-2)
    order = sim.argsort(dim=1, descending=True)[:, :5]
    assert np.array_equal(data["knn"].reshape(24, 5), order.numpy())
    assert np.array_equal(data["group"], np.arange(24) % 3)
    norms = feats.norm(dim=1).numpy()
    assert data["score"].argmax() == norms.argmax() and data["score"].argmin() == norms.argmin()
    assert len(w.map_points) < 24 * 60, "binary, a few bytes per point (no JSON lists)"
    # the kernel's neighbours of the image on screen: the same ranking
    w.select(4)
    assert w.neighbours["of"] == 4 and w.neighbours["indices"] == order[4].tolist()
    assert [i for i, _ in w.neighbours_of(4, k=3)] == order[4, :3].tolist()
    w.close()


def test_selection_is_validated_observable_and_settable(pictures, one_thread):
    w = fw.Explorer(backbone(), pictures, map=True)
    seen = []
    w.observe(lambda change: seen.append(change["new"]), names=["selection"])
    w.selection = [5, 2, 5]
    assert w.selection == [5, 2] and seen == [[5, 2]]
    with pytest.raises(traitlets.TraitError, match=r"0\.\.23"):
        w.selection = [3, 24]
    assert w.selection == [5, 2]
    w.close()


def test_a_neighbour_click_explains_the_pair_both_ways(pictures, one_thread):
    model = backbone().train()
    flags = [p.requires_grad for p in model.parameters()]
    w = fw.Explorer(model, pictures, map=True)
    w.select(3)
    near = w.neighbours["indices"][0]
    w._on_message(w, {"type": "pair", "index": near, "other": 3}, [])
    explanation = w.wait(60)
    assert w.view["index"] == near and w.view["anchor"] == 3
    assert explanation.target == "Similarity(image 3)"
    assert w.pair_explanation.target == f"Similarity(image {near})"
    assert len(w.pair_image) == 12 * 12 * 3 and len(w.pair_heatmap) == 12 * 12
    assert w.pair["caption"].startswith("#3 · grad-fam")
    assert w.neighbours["of"] == 3, "the list stays that of the anchor"
    w.select(7)  # a plain click: the pair slot empties
    assert w.pair == {} and w.pair_image == b"" and w.neighbours["of"] == 7
    w._on_message(w, {"type": "pair", "index": 99, "other": 3}, [])
    assert w.state == "error" and "0..23" in w.error
    with pytest.raises(IndexError, match="other"):
        w.explain_pair(1, -1)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    w.close()


def test_reid_map_colours_by_identity_and_similarity(pictures, one_thread):
    ids = [i % 4 for i in range(23)]
    w = fw.ReIDExplorer(backbone(), pictures[0], pictures[1:], query_id=1, gallery_ids=ids)
    info = w.map_info
    assert info["n"] == 23 and info["colour_by"] == ["identity", "rank", "score"]
    assert info["score_name"] == "similarity"
    assert abs(info["score_range"][1] - float(w.scores.max())) < 1e-6
    shown = [ids[i] for i in w.ranking]  # the gallery in rank order
    assert [info["groups"][g] for g in decode(w)["group"]] == [str(i) for i in shown]
    w.close()


def test_embedding_explorer_and_its_page(pictures, tmp_path, one_thread):
    model = backbone()
    small = pictures[:6]
    w = fw.EmbeddingExplorer(model, small, labels=list("aabbcc"), k=2)
    assert w.map_info["first"] and w.map_info["k"] == 2
    assert w.map_info["explained"][0] >= w.map_info["explained"][1]
    w.select(0)
    page = w.to_html(tmp_path / "map.html").read_text()
    state = json.loads(re.search(r'id="fw-states">(.*?)</script>', page, re.S).group(1))
    stored = state["models"]["page"]["explanations"]
    pairs = [name for name in stored if name.startswith("pair|")]
    assert len(pairs) == 6 * 2, "every image with each of its 2 neighbours"
    assert stored[pairs[0]]["view"]["anchor"] >= 0
    assert "map_points" in state["models"]["page"]["traits"]
    with pytest.raises(ValueError, match="map_k"):
        fw.EmbeddingExplorer(model, small, k=0)
    w.close()


def test_encode_map_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\(N,2\)"):
        encode_map(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="0..65535"):
        encode_map(torch.zeros(2, 2), groups=torch.tensor([0, 70000]))
