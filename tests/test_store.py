"""The explanation store (famwidget.dataset.store) and sharding (famwidget.dataset.distributed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import famwidget as fw
from famwidget.dataset import distributed, store


def make(tmp_path, n=10, chunk=4, channels=5):
    shapes = store.Shapes(
        n=n, chunk=chunk, height=6, width=4, features=3, channels=channels, top=2, thumb=(3, 2)
    )
    names = [f"img{i}.png" for i in range(n)]
    attrs = {
        "config": {"method": "grad-fam", "layer": "body", "target": "Embedding()"},
        "manifest": {"famwidget": fw.__version__},
    }
    return store.create(tmp_path / "s.zarr", shapes, names, attrs), names


def rows(m, start, channels=5):
    r = np.arange(start, start + m, dtype=np.float32)
    return {
        "heatmaps": np.full((m, 6, 4), 51, np.uint8) * (1 + np.arange(m)[:, None, None] % 2),
        "features": np.repeat(r[:, None], 3, 1),
        "weights": np.repeat(r[:, None], channels, 1),
        "top_channels": np.tile(np.array([[4, 1]], np.int32), (m, 1)),
        "scores": r,
        "labels": np.arange(start, start + m),
        "thumbnails": np.full((m, 3, 2, 3), 7, np.uint8),
        "errors": np.array([""] * m, dtype=object),
    }


def test_layout_chunks_and_attrs(tmp_path):
    g, names = make(tmp_path)
    assert g["heatmaps"].shape == (10, 6, 4) and g["heatmaps"].chunks == (4, 6, 4)
    assert g["features"].chunks == (4, 3) and g["status"].chunks == (4,)
    assert g["weights"].shape == (10, 5) and g["thumbnails"].shape == (10, 3, 2, 3)
    s = fw.open_explanations(tmp_path / "s.zarr")
    assert s.names == names and len(s) == 10
    assert s.attrs["format"] == store.FORMAT and not s.complete
    assert (s.status == store.MISSING).all()


def test_rows_not_marked_done_read_as_fill(tmp_path):
    """Data written without its status (a run killed between the two) is never read as data."""
    g, _ = make(tmp_path)
    full = rows(4, 0)
    for name in store.DATA_ARRAYS:  # chunk 0's data, but no status: killed half way
        g[name][0:4] = full[name]
    state = np.array([store.DONE, store.FAILED, store.DONE, store.DONE], np.uint8)
    store.write_chunk(g, 4, rows(4, 4), state)
    s = fw.open_explanations(tmp_path / "s.zarr")
    heat = s.heatmaps[:]
    assert (heat[:4] == 0).all(), "rows without a done status must not read as data"
    assert (heat[4] == 51).all() and (heat[5] == 0).all() and (heat[6] == 51).all()
    feats = s.features[:]
    assert np.isnan(feats[:4]).all() and np.isnan(feats[5]).all()
    np.testing.assert_array_equal(feats[[4, 6, 7], 0], [4, 6, 7])
    # every kind of index: int, slice, list, bool mask, a second axis
    assert s.scores[4] == 4 and np.isnan(s.scores[0])
    np.testing.assert_array_equal(s.scores[[7, 4]], [7, 4])
    np.testing.assert_array_equal(s.features[4:8, 0][[0, 2, 3]], [4, 6, 7])
    mask = np.zeros(10, bool)
    mask[[5, 6]] = True
    assert np.isnan(s.scores[mask][0]) and s.scores[mask][1] == 6
    assert s.top_channels[6].tolist() == [4, 1] and s.top_channels[0].tolist() == [-1, -1]
    assert np.asarray(s.features).shape == (10, 3)


def test_indexing_gives_an_explanation_and_clear_errors(tmp_path):
    g, _ = make(tmp_path)
    rs = rows(4, 4)
    rs["errors"][1] = "cannot read it (OSError: image file is truncated)"
    store.write_chunk(g, 4, rs, np.array([1, 2, 1, 1], np.uint8))
    s = fw.open_explanations(tmp_path / "s.zarr")
    e = s[4]
    assert isinstance(e, fw.Explanation) and e.heatmap.shape == (1, 6, 4)
    assert torch.allclose(e.heatmap, torch.full((1, 6, 4), 0.2))
    assert e.method == "grad-fam" and e.layer == "body" and e.weights.shape == (1, 5)
    assert s[-4].scores.item() == 6.0
    with pytest.raises(ValueError, match=r"img5.png\) failed: cannot read it"):
        s[5]
    with pytest.raises(ValueError, match="not explained yet"):
        s[0]
    with pytest.raises(IndexError, match="10 entries"):
        s[10]
    assert s.errors == {"img5.png": "cannot read it (OSError: image file is truncated)"}
    table = s.table()
    assert [r["status"] for r in table[3:6]] == ["missing", "done", "failed"]
    assert table[4]["name"] == "img4.png" and table[4]["label"] == 4
    assert "1 failed" in repr(s) and "3 done" in repr(s)


def test_no_weights_arrays_for_methods_without_them(tmp_path):
    g, _ = make(tmp_path, channels=None)
    assert "weights" not in g and "top_channels" not in g
    s = fw.open_explanations(tmp_path / "s.zarr")
    assert s.weights is None and s.heatmaps.shape == (10, 6, 4)


def test_float16_heatmaps_and_bad_dtype(tmp_path):
    shapes = store.Shapes(3, 2, 4, 4, 2, None, 1, None, heatmap_dtype="float16")
    g = store.create(tmp_path / "h.zarr", shapes, ["a", "b", "c"], {"config": {"method": "m"}})
    assert g["heatmaps"].dtype == np.float16 and "thumbnails" not in g
    with pytest.raises(ValueError, match="uint8"):
        store.create(
            tmp_path / "x.zarr",
            store.Shapes(3, 2, 4, 4, 2, None, 1, None, "int8"),
            ["a", "b", "c"],
            {},
        )


def test_opening_something_else_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an explanation store"):
        fw.open_explanations(tmp_path)

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(ValueError, match="not a famwidget explanation store"):
        fw.open_explanations(tmp_path / "other.zarr")


@pytest.mark.parametrize("n_chunks,size", [(10, 3), (2, 4), (7, 1), (0, 2), (8, 2)])
def test_shards_are_disjoint_contiguous_and_cover_everything(n_chunks, size):
    parts = [distributed.shard(n_chunks, r, size) for r in range(size)]
    flat = [c for p in parts for c in p]
    assert flat == list(range(n_chunks)), "every chunk exactly once, in order"
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="rank must be"):
        distributed.shard(n_chunks, size, size)


def test_alone_the_world_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    w = distributed.world()
    assert (w.rank, w.size, w.main) == (0, 1, True)
    assert distributed.sum_all(w, [1.0, 2.0]) == [1.0, 2.0] and distributed.max_all(w, 3.0) == 3.0


def test_explorer_from_store_shows_stored_maps_without_the_model(tmp_path, one_thread):
    model = fw.zoo.flower_net()
    ds = fw.data.flowers(8)
    s = fw.explain_dataset(model, ds, "grad-fam", out=tmp_path / "b.zarr", progress=False)
    calls: list[int] = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        w = fw.Explorer.from_store(tmp_path / "b.zarr", model, data=ds, limit=5)
        before = len(calls)
        shown = w.select(3)
        assert len(calls) == before, "a stored entry is shown without running the model"
        assert "(stored)" in w.view["caption"] and w.state == "ready"
        assert torch.allclose(shown.heatmap[0], torch.from_numpy(s.heatmaps[3] / 255).float())
        assert w.store_entries == [0, 1, 2, 3, 4]
        w.method = "grad-cam"  # another method is explained live
        assert w.wait().method == "grad-cam" and len(calls) > before
        w.close()
        thumbs = fw.Explorer.from_store(tmp_path / "b.zarr", model, entries=[6, 7])
        assert thumbs.select(1).scores.item() == pytest.approx(float(s.scores[7]))
        thumbs.close()
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="not done entries"):
        fw.Explorer.from_store(tmp_path / "b.zarr", model, entries=[99])
    with pytest.raises(ValueError, match="names differ"):
        fw.Explorer.from_store(tmp_path / "b.zarr", model, data=fw.data.flowers(3).images[:, :8])
