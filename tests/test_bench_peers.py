"""famwidget bench --peers on a tiny case: the table's structure, the maps agree, missing peers."""

from __future__ import annotations

import json

import pytest
import pytorch_grad_cam  # noqa: F401  (the peers are in the test extra: never skipped)
import torch
import torchcam  # noqa: F401

from famwidget import bench
from famwidget.bench import peers
from famwidget.bench.peers import Case


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The command line on two tiny cases, one round, no memory probes (tested below)."""
    out = tmp_path_factory.mktemp("bench")
    status = bench.main(
        ["--peers", "--device", "cpu", "--cases", "grad-cam/tiny/b2,score-fam/tiny/b2",
         "--repeats", "1", "--no-memory", "--out", str(out)]
    )  # fmt: skip
    assert status == 0
    return out, json.loads((out / "peers.json").read_text())


def by_case(report: dict) -> dict[str, dict[str, dict]]:
    found: dict[str, dict[str, dict]] = {}
    for r in report["results"]:
        found.setdefault(r["case"], {})[r["tool"]] = r
    return found


def test_every_tool_runs_every_case(report):
    _, data = report
    cases = by_case(data)
    assert list(cases) == ["grad-cam/tiny/b2", "score-fam/tiny/b2"]
    for results in cases.values():
        assert list(results) == list(peers.TOOLS)
        for r in results.values():
            assert r["status"] == "ok"
            assert len(r["seconds"]) == 1 and r["median"] > 0
        assert results["famwidget"]["ratio"] == pytest.approx(1.0)
        for tool in ("pytorch-grad-cam", "torchcam"):
            r = results[tool]
            assert r["ratio"] == pytest.approx(r["median"] / results["famwidget"]["median"])
    assert data["machine"]["cores"] >= 1 and data["repeats"] == 1
    assert data["machine"]["pytorch-grad-cam"] != "not installed"


def test_peers_maps_agree_with_famwidget(report):
    cases = by_case(report[1])
    for tool in ("pytorch-grad-cam", "torchcam"):
        # Grad-CAM: the definitions coincide (mean gradient, ReLU, bilinear resize, min-max).
        assert cases["grad-cam/tiny/b2"][tool]["agreement"] > 0.99
        # Score-FAM with the peers' softmax weights: the same masked copies up to where the
        # min-max of each mask is taken (TorchCAM before upsampling, famwidget after).
        assert cases["score-fam/tiny/b2"][tool]["agreement"] > 0.95


def test_markdown_table(report):
    out, _ = report
    text = (out / "peers.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = lines[0]
    for name in (*peers.TOOLS, "peak RSS rise", "Pearson r"):
        assert name in header
    assert len(lines) == 2 + 2  # header, rule, one row per case
    assert lines[2].startswith("| grad-cam/tiny/b2 |")
    assert "x)" in lines[2]  # the peers' ratios to famwidget
    assert "noise: load average" in text and "famwidget bench --peers" in text


def test_a_missing_peer_is_said_in_the_table(monkeypatch):
    real = peers.installed
    monkeypatch.setattr(peers, "installed", lambda tool: tool != "torchcam" and real(tool))
    results = peers.compare(Case("grad-cam", "tiny", 1), "cpu", repeats=1, memory=False)
    missing = {r.tool: r for r in results}["torchcam"]
    assert missing.status == "not installed" and missing.median is None
    row = peers.rows_for(results)[0]
    assert row[3] == "not installed"
    assert row[4].endswith("/ not installed")
    assert {r.tool: r for r in results}["pytorch-grad-cam"].agreement > 0.99


def test_peak_memory_counts_the_call_only():
    held = []
    rise = peers.peak_rise_mb(lambda: held.append(torch.ones(64, 2**18)), torch.device("cpu"))
    assert 60 <= rise < 200  # 64 MB allocated and kept
    rise = peers.peak_rise_mb(lambda: torch.ones(8, 2**10).sum(), torch.device("cpu"))
    assert rise < 30  # nothing big: the earlier peak is not counted again


def test_memory_in_a_fresh_process():
    mb = peers.measure_memory(Case("grad-cam", "tiny", 1), "famwidget", "cpu")
    assert isinstance(mb, float), mb
    assert 0 <= mb < 200


@pytest.mark.parametrize(
    "text", ["grad-fam/resnet18", "gradcam/resnet18/b1", "grad-fam/vgg/b1", "grad-fam/tiny/8",
             "grad-fam/tiny/b0", "grad-cam/reid_net/b1"]
)  # fmt: skip
def test_bad_case_names_are_refused(text):
    with pytest.raises(ValueError, match="METHOD/MODEL/bBATCH|batch|reid_net has no classes"):
        Case.parse(text)


def test_the_case_lists():
    assert Case.parse("score-fam/resnet50/b8") == Case("score-fam", "resnet50", 8)
    everything = {c.name for c in peers.all_cases()}
    assert {"grad-fam/resnet18/b1", "score-cam/resnet50/b8", "score-fam/reid_net/b8"} <= everything
    assert set(peers.default_cases("cuda")) == set(peers.all_cases())
    cpu = peers.default_cases("cpu")
    assert all(c.name in everything for c in cpu)
    assert "score-fam/resnet50/b8" not in {c.name for c in cpu}
