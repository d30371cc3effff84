"""famwidget explain under torchrun: 2 real gloo processes on the CPU give a single run's store."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import zarr  # noqa: F401  (the test extra: a missing zarr fails, never skips)
from PIL import Image

import famwidget as fw


def two_ranks(*command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 COMMAND`` (gloo on the CPU, one thread each)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return subprocess.run(
        [*torchrun, "--nproc-per-node", "2", *command],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """200 synthetic flowers as PNG files, one folder per class (ImageFolder layout)."""
    root = tmp_path_factory.mktemp("flowers200")
    ds = fw.data.flowers(200)
    for i, (im, label) in enumerate(zip(ds.images, ds.labels, strict=True)):
        (root / ds.classes[label]).mkdir(exist_ok=True)
        Image.fromarray(im).save(root / ds.classes[label] / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_two_ranks_give_the_single_process_store(tmp_path, folder, one_thread):
    args = [
        "explain",
        "--model",
        "zoo:flower_net",
        "--data",
        str(folder),
        "--method",
        "grad-fam",
        "--chunk-size",
        "32",
        "--batch-size",
        "16",
        "--no-progress",
    ]
    single = fw.explain_dataset(
        fw.zoo.flower_net(),
        folder,
        "grad-fam",
        out=tmp_path / "one",
        chunk_size=32,
        batch_size=16,
        progress=False,
        model_name="zoo:flower_net",
    )
    run = two_ranks("-m", "famwidget", *args, "--out", str(tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "on 2 process(es)" in run.stderr and "device cpu" in run.stderr
    two = fw.open_explanations(tmp_path / "two")
    assert two.complete and single.complete
    assert two.names == single.names and len(two) == 200, "same entries, same order"
    assert two.attrs["summary"]["world_size"] == 2
    assert two.attrs["summary"]["explained_this_run"] == 200, "no padded duplicates"
    assert np.abs(two.heatmaps[:].astype(int) - single.heatmaps[:]).max() <= 1  # 1/255
    np.testing.assert_allclose(two.features[:], single.features[:], atol=1e-5)
    np.testing.assert_allclose(two.weights[:], single.weights[:], atol=1e-5)
    assert (two.labels[:] == single.labels[:]).all() and (two.status == 1).all()
    assert two.attrs["config"] == single.attrs["config"]


FIT_WORKER = r'''
"""Run by torchrun: Interpreter.fit on flowers, three ways; rank 0 saves the weights."""
import json
import sys

import torch
import torch.distributed as dist

import famwidget as fw

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
out = sys.argv[1]
model = fw.zoo.flower_net()
ds = fw.data.flowers(64)
# contiguous, as a DataLoader collates them (a channels-last batch convolves differently)
x, y = model.preprocess.batch(ds.images).contiguous(), torch.as_tensor(ds.labels)


class Seen(torch.utils.data.Dataset):
    """The flowers, remembering which entries this rank loaded."""

    def __init__(self):
        self.seen = []

    def __len__(self):
        return len(x)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return x[i], y[i]


seen = Seen()
loader = torch.utils.data.DataLoader(seen, batch_size=16)
sampler = torch.utils.data.DistributedSampler(seen, shuffle=False)
by_sampler = torch.utils.data.DataLoader(seen, batch_size=8, sampler=sampler)
weights = {
    "tensor": fw.Interpreter(model, tau=5).fit(x, y, batch_size=16).weights,
    "loader": fw.Interpreter(model, tau=5).fit(loader).weights,
}
loaded = sorted(seen.seen)
weights["one batch"] = fw.Interpreter(model, tau=5).fit(x[:16], y[:16], batch_size=16).weights
weights["sampler"] = fw.Interpreter(model, tau=5).fit(by_sampler).weights
padded = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x[:63], y[:63]),
    batch_size=8,
    sampler=torch.utils.data.DistributedSampler(range(63), shuffle=False),
)
try:
    fw.Interpreter(model, tau=5).fit(padded)
    refused = ""
except ValueError as e:
    refused = str(e)
everyone = [None, None]
dist.all_gather_object(everyone, {k: v.tolist() for k, v in weights.items()})
same = everyone[0] == everyone[1]
torch.save(weights, f"{out}/weights-{rank}.pt")
with open(f"{out}/rank-{rank}.json", "w") as f:
    json.dump({"loaded": loaded, "refused": refused, "same_on_every_rank": same}, f)
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_interpreter_fit_under_two_ranks_equals_the_single_process_fit(tmp_path, one_thread):
    import json

    import torch

    script = tmp_path / "fit_worker.py"
    script.write_text(FIT_WORKER)
    run = two_ranks(str(script), str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    model = fw.zoo.flower_net()
    ds = fw.data.flowers(64)
    x, y = model.preprocess.batch(ds.images).contiguous(), torch.as_tensor(ds.labels)
    single = fw.Interpreter(model, tau=5).fit(x, y, batch_size=16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    from_loader = fw.Interpreter(model, tau=5).fit(loader)
    assert (single.weights != 0).sum() > 6, "a real fit: several features per class"
    assert torch.allclose(from_loader.weights, single.weights, atol=1e-6), "in memory = loader"
    two = torch.load(tmp_path / "weights-0.pt", weights_only=True)
    for way in ("tensor", "loader"):  # the same batches of 16 as the single process
        assert two[way].shape == single.weights.shape, way
        assert (two[way] - single.weights).abs().max() <= 1e-6, way
    # one batch for two ranks: rank 1 has nothing to add and still takes part in the reduction
    few = fw.Interpreter(model, tau=5).fit(x[:16], y[:16], batch_size=16)
    assert (two["one batch"] - few.weights).abs().max() <= 1e-6
    # The sampler's batches hold every other image: float32 convolutions of other batches
    # differ by ~1e-7 and this 64-image lasso (D=384) amplifies that about 100 times.
    assert (two["sampler"] - single.weights).abs().max() <= 1e-4
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["same_on_every_rank"] for r in ranks)
    # each rank loaded only its own block of the loader's batches: disjoint and covering
    assert not set(ranks[0]["loaded"]) & set(ranks[1]["loaded"])
    assert sorted(ranks[0]["loaded"] + ranks[1]["loaded"]) == list(range(64))
    for r in ranks:  # a DistributedSampler that repeats entries to pad the shards is refused
        assert "pads 63 entries to 64" in r["refused"] and "count twice" in r["refused"]
