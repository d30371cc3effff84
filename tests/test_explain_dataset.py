"""fw.explain_dataset (famwidget.dataset.runner, sources, specs, progress) and famwidget explain."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import zarr  # noqa: F401  (the test extra: a missing zarr fails, never skips)
from PIL import Image

import famwidget as fw
from famwidget.cli import main as cli_main
from famwidget.dataset import EntryError, specs
from famwidget.dataset.progress import Progress
from famwidget.dataset.sources import FolderSource, as_source


@pytest.fixture(scope="module")
def flowers():
    """flower_net and 24 preprocessed flowers (N,3,112,112)."""
    model = fw.zoo.flower_net()
    ds = fw.data.flowers(24)
    return model, ds, torch.stack([model.preprocess(im) for im in ds.images])


def test_store_equals_fw_explain(tmp_path, flowers, one_thread):
    model, ds, x = flowers
    s = fw.explain_dataset(
        model, ds, "grad-cam", out=tmp_path / "s.zarr", batch_size=5, chunk_size=8, progress=False
    )
    ref = fw.explain(model, x, "grad-cam")
    assert s.complete and len(s) == 24 and s.names[:2] == ["00", "01"]
    heat = s.heatmaps[:].astype(np.float32) / 255
    assert np.abs(heat - ref.heatmap.numpy()).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_allclose(s.weights[:], ref.weights.numpy(), atol=1e-5)
    np.testing.assert_allclose(s.scores[:], ref.scores.numpy(), atol=1e-4)
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_allclose(s.features[:], logits.numpy(), atol=1e-4)
    assert (s.labels[:] == ds.labels).all()
    top = s.top_channels[:]
    assert (top[:, 0] == ref.weights.argmax(1).numpy()).all()
    assert s.thumbnails.shape == (24, 64, 64, 3) and s.thumbnails[0].std() > 5
    m = s.manifest
    assert m["method"] == "grad-cam" and m["layer"] == "features" and m["torch"]
    assert m["famwidget"] == fw.__version__ and m["model"] == "FlowerNet"
    assert s.attrs["summary"]["done"] == 24 and s.attrs["summary"]["bytes_per_entry"] > 0


def test_float16_maps_and_a_method_without_weights(tmp_path, flowers, one_thread):
    model, _, x = flowers
    s = fw.explain_dataset(
        model,
        x[:6],
        "fixations",
        out=tmp_path / "f.zarr",
        heatmap_dtype="float16",
        progress=False,
        thumbnail=0,
    )
    ref = fw.explain(model, x[:6], "fixations")
    assert s.heatmaps.dtype == np.float16 and s.weights is None and s.thumbnails is None
    np.testing.assert_allclose(s.heatmaps[:].astype(np.float32), ref.heatmap.numpy(), atol=1e-3)


def test_the_model_comes_back_as_it_went_in(tmp_path, tiny_embedding, one_thread):
    model = tiny_embedding.train()
    model.head.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fw.explain_dataset(model, torch.rand(6, 3, 16, 16), out=tmp_path / "t.zarr", progress=False)
    assert model.training and not model.head.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "BN stats"
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_bad_options_are_refused_clearly(tmp_path, tiny_embedding):
    x = torch.rand(4, 3, 16, 16)
    with pytest.raises(ValueError, match="on_error must be one of"):
        fw.explain_dataset(tiny_embedding, x, out=tmp_path / "a", on_error="ignore")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        fw.explain_dataset(tiny_embedding, x, out=tmp_path / "a", chunk_size=0)
    with pytest.raises(TypeError, match="data must be"):
        fw.explain_dataset(tiny_embedding, {"x": 1}, out=tmp_path / "a")
    with pytest.raises(TypeError, match="IterableDataset"):
        fw.explain_dataset(tiny_embedding, _Stream(), out=tmp_path / "a")
    with pytest.raises(ValueError, match="valid"):  # a wrong layer lists the valid ones
        fw.explain_dataset(tiny_embedding, x, layer="nope", out=tmp_path / "b", progress=False)


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield torch.rand(3, 16, 16)


def test_resume_with_other_settings_is_refused(tmp_path, tiny_embedding, one_thread):
    x = torch.rand(4, 3, 16, 16)
    fw.explain_dataset(tiny_embedding, x, out=tmp_path / "s.zarr", progress=False)
    with pytest.raises(ValueError, match=r"other settings \(method: stored 'grad-fam'"):
        fw.explain_dataset(tiny_embedding, x, "score-fam", out=tmp_path / "s.zarr")
    s = fw.explain_dataset(
        tiny_embedding, x, "score-fam", out=tmp_path / "s.zarr", overwrite=True, progress=False
    )
    assert s.method == "score-fam" and s.complete


class _Counting(torch.utils.data.Dataset):
    """A map-style dataset of preprocessed images that records every index it is asked for."""

    def __init__(self, x, labels):
        self.x, self.labels, self.asked = x, labels, []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.asked.append(i)
        return self.x[i], int(self.labels[i])


CHILD = """
import sys, time, torch, famwidget as fw
torch.set_num_threads(1)
class Slow(torch.utils.data.Dataset):
    def __init__(self, x, labels): self.x, self.labels = x, labels
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        if i >= 24:
            time.sleep(3600)  # killed here, with chunks 0..2 written
        return self.x[i], int(self.labels[i])
model = fw.zoo.flower_net()
ds = fw.data.flowers(40)
x = torch.stack([model.preprocess(im) for im in ds.images])
fw.explain_dataset(model, Slow(x, ds.labels), "grad-cam", out=sys.argv[1], chunk_size=8,
                   batch_size=8, progress=False)
"""


def test_killed_run_resumes_without_redoing_anything(tmp_path, one_thread, capsys):
    out = tmp_path / "killed.zarr"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    child = subprocess.Popen([sys.executable, str(script), str(out)])
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if (out / "status" / "c" / "2").exists():  # chunk 2 (entries 16..23) is marked
                break
            assert child.poll() is None, "the child run ended before it was killed"
            time.sleep(0.2)
        else:
            pytest.fail("the child run did not reach chunk 2 in time")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    half = fw.open_explanations(out)
    assert not half.complete and (half.status[:24] == 1).all() and (half.status[24:] == 0).all()
    assert np.isnan(half.features[30]).all(), "an entry not marked done reads as missing"

    model = fw.zoo.flower_net()
    ds = fw.data.flowers(40)
    x = torch.stack([model.preprocess(im) for im in ds.images])
    again = _Counting(x, ds.labels)
    capsys.readouterr()
    lines: list[str] = []
    s = fw.explain_dataset(
        model,
        again,
        "grad-cam",
        out=out,
        chunk_size=8,
        batch_size=8,
        progress=False,
        log=lines.append,
    )
    assert sorted(again.asked) == list(range(24, 40)), "only the missing entries are read"
    assert any("24 of 40 entries already done, 16 to go" in line for line in lines)
    assert s.complete and s.attrs["summary"]["explained_this_run"] == 16

    whole = fw.explain_dataset(
        model,
        _Counting(x, ds.labels),
        "grad-cam",
        out=tmp_path / "whole.zarr",
        chunk_size=8,
        batch_size=8,
        progress=False,
    )
    assert s.names == whole.names
    assert np.abs(s.heatmaps[:].astype(int) - whole.heatmaps[:]).max() <= 1
    np.testing.assert_allclose(s.features[:], whole.features[:], atol=1e-5)
    assert (s.labels[:] == ds.labels).all()


@pytest.fixture
def bad_folder(tmp_path):
    """6 flower files in ImageFolder layout; one truncated, one of the wrong size."""
    ds = fw.data.flowers(6)
    root = tmp_path / "pics"
    for i, (im, label) in enumerate(zip(ds.images, ds.labels, strict=True)):
        (root / ds.classes[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(root / ds.classes[label] / f"{i}.png")
    (root / "zz").mkdir()
    Image.fromarray(ds.images[0]).resize((56, 56)).save(root / "zz" / "small.png")
    Image.fromarray(ds.images[1]).save(root / "zz" / "cut.png")
    data = (root / "zz" / "cut.png").read_bytes()
    (root / "zz" / "cut.png").write_bytes(data[: len(data) // 2])
    return root


def test_bad_entries_are_skipped_with_their_names(tmp_path, bad_folder, one_thread):
    model = fw.zoo.flower_net()
    lines: list[str] = []
    s = fw.explain_dataset(
        model, bad_folder, "grad-cam", out=tmp_path / "s.zarr", progress=False, log=lines.append
    )
    assert len(s) == 8 and s.complete
    assert set(s.errors) == {"zz/cut.png", "zz/small.png"}
    assert "56x56" in s.errors["zz/small.png"] and "112x112" in s.errors["zz/small.png"]
    assert "cannot read it" in s.errors["zz/cut.png"]
    assert any(line.startswith("skipped zz/cut.png") for line in lines)
    assert (s.status == [1] * 6 + [2, 2]).all()
    src = FolderSource(bad_folder, model.preprocess)
    assert src.classes[-1] == "zz" and (s.labels[:6] == src.labels[:6]).all()


def test_on_error_stop_names_the_entry(tmp_path, bad_folder, one_thread, capsys):
    with pytest.raises(EntryError, match="zz/cut.png: cannot read it"):
        fw.explain_dataset(
            fw.zoo.flower_net(),
            bad_folder,
            "grad-cam",
            out=tmp_path / "a",
            on_error="stop",
            progress=False,
        )
    rc = cli_main(
        [
            "explain",
            "--model",
            "zoo:flower_net",
            "--data",
            str(bad_folder),
            "--method",
            "grad-cam",
            "--out",
            str(tmp_path / "b"),
            "--on-error",
            "stop",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "stopped at zz/cut.png" in err


def test_cli_explains_a_shipped_set_and_a_tensor_file(tmp_path, one_thread, capsys):
    rc = cli_main(
        [
            "explain",
            "--model",
            "zoo:reid_net",
            "--data",
            "persons:6",
            "--method",
            "grad-fam",
            "--out",
            str(tmp_path / "p.zarr"),
            "--batch-size",
            "4",
            "--chunk-size",
            "4",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and "explained 6 entries" in err and "shipped weights" in err
    s = fw.open_explanations(tmp_path / "p.zarr")
    assert s.heatmaps.shape == (6, 128, 64) and s.features.shape[0] == 6
    assert s.manifest["model"] == "zoo:reid_net" and (s.labels[:] == [0, 0, 0, 0, 1, 1]).all()
    torch.save({"images": torch.rand(3, 3, 112, 112), "names": ["a", "b", "c"]}, tmp_path / "x.pt")
    rc = cli_main(
        [
            "explain",
            "--model",
            "zoo:flower_net",
            "--data",
            str(tmp_path / "x.pt"),
            "--method",
            "grad-cam",
            "--target",
            "class:2",
            "--out",
            str(tmp_path / "x.zarr"),
            "--no-progress",
        ]
    )
    s = fw.open_explanations(tmp_path / "x.zarr")
    assert rc == 0 and s.names == ["a", "b", "c"] and "ClassLogit" in s.attrs["config"]["target"]
    rc = cli_main(
        ["explain", "--model", "zoo:nope", "--data", "flowers:2", "--out", str(tmp_path / "n")]
    )
    assert rc == 1 and "available: flower_net" in capsys.readouterr().err


def test_specs(tmp_path):
    model, note = specs.load_model("torchvision:resnet18")
    assert "RANDOM weights" in note and not model.training
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    _, note = specs.load_model("torchvision:resnet18", str(tmp_path / "w.safetensors"))
    assert "w.safetensors" in note
    tiny, note = specs.load_model("conftest:TinyEmbedding")
    assert type(tiny).__name__ == "TinyEmbedding"
    with pytest.raises(ValueError, match="not understood"):
        specs.load_model("resnet18")
    with pytest.raises(ValueError, match="unknown torchvision model"):
        specs.load_model("torchvision:nonet")
    assert len(specs.load_data("flowers:3")) == 3 and len(specs.load_data("persons:5")) == 5
    with pytest.raises(ValueError, match="positive integer"):
        specs.load_data("flowers:x")
    with pytest.raises(ValueError, match="not understood"):
        specs.load_data("imagenet")
    assert specs.parse_target(None) is None
    assert type(specs.parse_target("dimension:3")).__name__ == "Dimension"
    with pytest.raises(ValueError, match="class:C"):
        specs.parse_target("klass:3")


def test_sources_accept_datasets_loaders_and_arrays():
    ds = fw.data.flowers(3)
    loader = torch.utils.data.DataLoader(_Counting(torch.rand(3, 3, 8, 8), [4, 5, 6]))
    src = as_source(loader, None)
    x, rgb = src.load(1)
    assert x.shape == (3, 8, 8) and rgb is None and src.labels[1] == 5
    arr = as_source(ds.images, None)
    x, rgb = arr.load(0)
    assert x.max() <= 1 and rgb.shape == (112, 112, 3)
    with pytest.raises(ValueError, match="float"):
        as_source(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), None)


def test_progress_line_has_rate_and_time_left():
    out = io.StringIO()
    p = Progress(10, initial=2, stream=out, use_tqdm=False)
    p.start -= 2.0  # as if 2 s had passed
    p.update(4)
    text = out.getvalue()
    assert "6/10 (60%)" in text and "img/s" in text and "s left" in text
    assert 1.5 < p.rate() < 2.5
