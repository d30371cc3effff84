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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "famwidget",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
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
