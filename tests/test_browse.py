"""Explorer.from_store and ReIDExplorer.from_store (famwidget.dataset.browse): a stored set of any
size browsed without loading it; stored maps shown with no model run; others explained live."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr  # noqa: F401  (the test extra: a missing zarr fails, never skips)
from torch import nn

import famwidget as fw

N = 600  # over the 512 a gallery sends inline: its thumbnails come in pages


class Counted(torch.utils.data.Dataset):
    """Random 32 px images with labels (4 identities), remembering which entries were loaded."""

    def __init__(self, n: int = N) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, 32, 32, generator=g)
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        self.loaded.append(int(i))
        return self.images[i], i % 4


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    path = tmp_path_factory.mktemp("browse") / "g.zarr"
    data = Counted()
    fw.explain_dataset(
        tiny_net(), data, "grad-fam", "2", out=path, batch_size=100, chunk_size=100, progress=False
    )
    return path, fw.open_explanations(path)


def forward_counter(model: nn.Module) -> tuple[list[int], object]:
    calls: list[int] = []
    return calls, model.register_forward_hook(lambda *a: calls.append(1))


def test_a_large_store_opens_without_loading_it_and_shows_stored_maps(stored, one_thread):
    path, store = stored
    model, data = tiny_net(), Counted()
    w = fw.Explorer.from_store(path, model, data=data)
    try:
        assert w.gallery["n"] == N and w.gallery["paged"] and w.thumbs == b""
        assert len(w.gallery["captions"]) == N and w.store_entries == list(range(N))
        assert data.loaded == [0], "only the first entry is read to build the widget"
        content, page = w._thumbs.page(2)  # the browser's page request reads the store
        start, count, h, wd = content["start"], content["count"], content["h"], content["w"]
        thumbs = np.frombuffer(page, np.uint8).reshape(count, h, wd, 3)
        assert (h, wd) == store.thumbnails.shape[1:3]
        assert np.array_equal(thumbs, store.thumbnails[start : start + count])
        calls, hook = forward_counter(model)
        shown = w.select(550)
        hook.remove()
        assert calls == [], "a stored map is shown with no model run"
        assert data.loaded == [0, 550], "a click reads that entry alone"
        stored_map = torch.from_numpy(store.heatmaps[550] / 255).float()
        assert torch.allclose(shown.heatmap[0], stored_map)
        assert w.view["caption"].endswith("(stored)") and w.view["index"] == 550
        assert shown.heatmap[0].std() > 0.01, "a real map, not a blank one"
        calls, hook = forward_counter(model)
        w.layer = "0"  # another layer: explained live
        live = w.wait()
        hook.remove()
        assert calls and live.layer == "0" and "(stored)" not in w.view["caption"]
    finally:
        w.close()


def test_without_data_the_stored_thumbnails_stand_in(stored, one_thread):
    path, store = stored
    w = fw.Explorer.from_store(path, tiny_net(), entries=[7, 3], labels=["a", "b"])
    try:
        assert w.gallery["n"] == 2 and not w.gallery.get("paged")
        assert w.gallery["captions"] == ["a", "b"] and w.store_entries == [7, 3]
        exp = w.select(1)
        assert exp.options["entry"] == 3 and exp.scores.item() == pytest.approx(store.scores[3])
        assert w._shown[1].shape == (32, 32, 3)
    finally:
        w.close()
    with pytest.raises(ValueError, match="not done entries"):
        fw.Explorer.from_store(path, tiny_net(), entries=[N])
    with pytest.raises(ValueError, match="names differ"):
        fw.Explorer.from_store(path, tiny_net(), data=Counted(5))


def test_reid_from_store_ranks_the_stored_features(stored, one_thread):
    path, store = stored
    model, data = tiny_net(), Counted()
    query = data.images[5]
    w = fw.ReIDExplorer.from_store(path, model, query, data=data, query_id=1, top=50)
    try:
        with torch.inference_mode():
            q = model(query[None])
        features = torch.from_numpy(store.features[:])
        scores = torch.nn.functional.cosine_similarity(features, q, dim=1)
        best = scores.argsort(descending=True)[:50]
        assert w.ranking == best.tolist() and w.ranking[0] == 5, "the query finds itself first"
        assert torch.allclose(w.scores, scores[best])
        assert w.gallery["n"] == 50 and w.gallery["captions"][0].startswith("1. 1.00 · id 1")
        assert w.gallery["marks"][0] == "match"
        assert set(data.loaded) <= {5}, "only the first ranked entry was read"
        w.pair_target = "embedding"
        calls, hook = forward_counter(model)
        result = w.select(3)
        hook.remove()
        entry = w.ranking[3]
        assert result.options["entry"] == entry, "the result's map is the stored one"
        assert torch.allclose(
            result.heatmap[0], torch.from_numpy(store.heatmaps[entry] / 255).float()
        )
        assert calls, "the query's own map is explained live"
        assert w.pair_explanation is not None and w.pair_explanation.target == "Embedding()"
        w.pair_target = "similarity"  # what the pair shares: live, with the query's features
        shared = w.wait()
        assert "store" not in shared.options and "similarity" in shared.target.lower()
    finally:
        w.close()
    with pytest.raises(ValueError, match="one image"):
        fw.ReIDExplorer.from_store(path, model, data.images[:2], data=data)
