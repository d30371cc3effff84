"""famwidget evaluate under torchrun: 2 real gloo ranks score disjoint shards, reduced rows equal
one process's (famwidget.dataset.sharded)."""

from __future__ import annotations

import json

import pytest
from test_torchrun import two_ranks

from famwidget import evaluate
from famwidget.dataset.sharded import _out_elsewhere

ARGS = ["--cases", "flowers", "-n", "8", "--methods", "grad-cam", "--steps", "4", "--batch", "4"]
ARGS += ["--randomisation-images", "6"]  # 4 of them on rank 0, 2 on rank 1


@pytest.mark.slow
def test_two_ranks_give_the_single_process_rows(tmp_path, one_thread):
    run = two_ranks("-m", "famwidget", "evaluate", *ARGS, "--out", str(tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 ranks" in run.stderr
    assert run.stdout.count("famwidget evaluate: n=8 images per case") == 1, "rank 0 prints"
    two = json.loads((tmp_path / "two" / "evaluation.json").read_text())["rows"]
    one = evaluate.evaluate(
        ["grad-cam"], ["flowers"], n=8, device="cpu", steps=4, batch=4, randomisation_images=6
    )
    assert [(r["method"], r["n"]) for r in two] == [("grad-cam", 8), ("(random)", 8)]
    assert [(r["method"], r["n"]) for r in one] == [("grad-cam", 8), ("(random)", 8)]
    for a, b in zip(one, two, strict=True):
        for key in evaluate.COLUMNS[5:13]:  # deletion .. randomisation_corr
            if a[key] is None:
                assert b[key] is None, key
            else:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (a["method"], key)
        for key, values in a["per_image"].items():  # gathered in the images' order
            assert b["per_image"][key] == pytest.approx(values, abs=1e-5), key
            assert b[f"{key}_sem"] == pytest.approx(a[f"{key}_sem"], abs=1e-5), key
    curve_one, curve_two = one[0]["randomisation_curve"], two[0]["randomisation_curve"]
    assert list(curve_two) == list(curve_one)
    assert list(curve_two.values()) == pytest.approx(list(curve_one.values()), abs=1e-5)
    assert len(set(one[0]["per_image"]["pointing_game"])) > 1, "a row that tells images apart"
    assert two[0]["s_per_image"] > 0 and two[0]["peak_mb"] is not None


def test_other_ranks_write_their_copy_elsewhere():
    assert _out_elsewhere(["-n", "4", "--out", "x"], "/t") == ["-n", "4", "--out", "/t"]
    assert _out_elsewhere(["--out=x", "-n", "4"], "/t") == ["--out=/t", "-n", "4"]
    assert _out_elsewhere(["-n", "4"], "/t") == ["-n", "4", "--out", "/t"]
