"""famwidget bench --only memory: Score-FAM's peak beside one plain forward of the batch."""

from __future__ import annotations

import torch

from famwidget.bench import memory


def test_width_net_has_k_channels_at_the_layer():
    model = memory.WidthNet(24).eval()
    with torch.no_grad():
        features = model.features(torch.rand(1, 3, memory.SIZE, memory.SIZE))
    assert features.shape == (1, 24, 28, 28)


def test_probe_measures_score_fam_and_the_plain_forward(one_thread):
    found = memory.probe(8, 4, "cpu")
    assert 1 <= found["forwards"] <= 8  # constant (dead) channels are skipped
    assert found["rise_mb"] >= 0 and found["plain_mb"] >= 0


def test_probe_command_line_refuses_bad_arguments(capsys):
    assert memory._main(["8"]) == 2
    usage = "usage: python -m famwidget.bench.memory K BATCH DEVICE [SIZE]"
    assert usage in capsys.readouterr().err
