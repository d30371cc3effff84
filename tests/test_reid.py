"""ReIDExplorer: the gallery ranked by cosine similarity; a click explains the pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import famwidget as fw


@pytest.fixture
def reid(tiny_embedding, images):
    torch.manual_seed(3)
    gallery = torch.cat([images, images[:2] + 0.02 * torch.randn(2, 3, 16, 16)])
    w = fw.ReIDExplorer(
        tiny_embedding, images[0], gallery, query_id=7, gallery_ids=[7, 1, 2, 3, 4, 7, 1]
    )
    yield w
    w.close()


def test_gallery_ranked_by_cosine_similarity(reid, tiny_embedding, images):
    with torch.no_grad():
        f = tiny_embedding.eval()(torch.cat([images[:1], reid._inputs]))
    sims = F.cosine_similarity(f[1:], f[:1], dim=1)
    assert torch.all(sims[:-1] >= sims[1:] - 1e-6), "best match first"
    assert torch.allclose(reid.scores, sims, atol=1e-5)
    assert reid.ranking[0] == 0  # the query itself is in the gallery: it ranks first
    assert reid.gallery["captions"][0].startswith("1. 1.00 · id 7")
    assert reid.gallery["marks"][0] == "match" and reid.gallery["marks"].count("match") == 2


def test_click_explains_the_pair_with_similarity(reid, tiny_embedding, images):
    result = reid.select(3)
    query = reid.pair_explanation
    assert result.target.startswith("Similarity") and query.target.startswith("Similarity")
    g = reid._inputs[3]
    with torch.no_grad():
        fq, fg = tiny_embedding.eval()(torch.stack([images[0], g]))
    expected = fw.explain(tiny_embedding, g, target=fw.targets.Similarity(fq))
    # the reference embeddings come from a batched forward here and a single one there: float32
    # noise, amplified because the tiny net's random embeddings are all close (cos ~ 0.99)
    assert torch.allclose(result.heatmap, expected.heatmap, atol=1e-3)
    assert torch.allclose(result.scores, F.cosine_similarity(fg[None], fq[None]), atol=1e-5)
    assert len(reid.pair_image) == 16 * 16 * 3 and len(reid.pair_heatmap) == 16 * 16
    assert reid.pair["caption"].startswith("query · grad-fam")


def test_pair_target_embedding_shows_each_feature(reid, tiny_embedding, images):
    reid.select(2)
    similarity_heat = bytes(reid.pair_heatmap)
    reid.pair_target = "embedding"
    reid.wait(10)
    assert reid.explanation.target == "Embedding()"
    own = fw.explain(tiny_embedding, images[0])
    heat = np.frombuffer(reid.pair_heatmap, np.uint8).reshape(16, 16) / 255
    assert np.abs(heat - own.numpy()[0]).max() < 1 / 255 + 1e-6
    assert bytes(reid.pair_heatmap) != similarity_heat


def test_ids_must_match_the_gallery(tiny_embedding, images):
    with pytest.raises(ValueError, match="got 2 gallery ids for 5 images"):
        fw.ReIDExplorer(tiny_embedding, images[0], images, query_id=1, gallery_ids=[1, 2])


def test_pair_page_exports(reid, tmp_path):
    reid.select(0)
    text = reid.to_html(tmp_path / "reid.html").read_text()
    assert '"pair_image":{"$blob":' in text


def test_pair_view_labels_query_and_result_and_gallery_has_scores(reid):
    assert reid.gallery["scores"] == [round(float(s), 4) for s in reid.scores]
    assert reid.gallery["scores"] == sorted(reid.gallery["scores"], reverse=True)
    reid.select(2)
    assert reid.view["label"] == f"result {reid.gallery['captions'][2]}"
    pair = reid.pair
    assert pair["label"] == "query" and pair["method"] == "grad-fam"
    assert pair["target"] == "Similarity(result 3)"
    assert pair["score"] == pytest.approx(float(reid.pair_explanation.scores[0]))
