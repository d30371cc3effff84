"""famwidget.budget: Score-FAM / Score-CAM refuse runs past their time or memory budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import famwidget as fw
from famwidget import budget


class Recorder(nn.Module):
    """Conv net that records the spatial size of every forward pass it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.ReLU())
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.body(x).mean(dim=(2, 3))


def test_a_4096_image_is_refused_from_a_small_probe_without_a_full_size_forward(one_thread):
    model = Recorder()
    x = torch.zeros(1, 3, 4096, 4096)
    with pytest.raises(ValueError) as err:
        fw.explain(model, x, "score-fam", layer="body", max_seconds=0.5)
    text = str(err.value)
    assert "up to 17 masked forward passes (16 channels x 1 image(s) at 4096x4096)" in text
    assert "over max_seconds=0.5" in text
    for way in ("smaller input", "later layer", "fewer images", "max_seconds=None"):
        assert way in text
    assert model.sizes and max(max(s) for s in model.sizes) <= 256  # only the probe ran
    assert fw.budget.probe_size(4096, 4096, "cpu") == (256, 256)


def test_the_estimate_scales_the_probe_by_pixels(one_thread):
    model = Recorder()
    cost = budget.estimate(model, torch.rand(2, 3, 1024, 512), model.body, baseline_passes=2)
    assert cost.channels == 16 and cost.images == 2 and cost.forwards == 2 * 16 + 2
    assert cost.probe == budget.probe_size(1024, 512, "cpu") and cost.probe[0] == 2 * cost.probe[1]
    assert cost.seconds == pytest.approx(cost.forwards * cost.seconds_per_forward)
    layer_bytes = 16 * 256 * 128 * 4  # stride 4: (16, 256, 128) fp32 per image at full size
    assert cost.bytes_needed == pytest.approx(2 * (3 * 1024 * 512 * 4 + layer_bytes), rel=0.05)


def test_small_runs_pass_and_max_seconds_none_skips_the_estimate(tiny_embedding, images):
    calls = []
    model = Recorder()
    exp = fw.explain(model, images, "score-fam", layer="body")  # the default budget
    assert exp.heatmap.shape == (5, 16, 16)
    before = len(model.sizes)
    fw.explain(model, images, "score-fam", layer="body", max_seconds=None)
    calls.append(len(model.sizes) - before)
    model.sizes.clear()
    fw.explain(model, images, "score-fam", layer="body", max_seconds=600)
    assert len(model.sizes) == calls[0] + 2  # the estimate: two timed probe forwards


def test_not_enough_memory_is_refused_with_the_need(monkeypatch):
    monkeypatch.setattr(budget, "available_bytes", lambda device: 1000)
    with pytest.raises(ValueError) as err:
        fw.explain(Recorder(), torch.rand(1, 3, 64, 64), "score-cam", layer="body",
                   target=fw.targets.Embedding())  # fmt: skip
    text = str(err.value)
    assert "needs at least" in text and "GiB" in text and "is available on cpu" in text
    assert "smaller input" in text


@pytest.mark.parametrize("bad, error", [("10", TypeError), (True, TypeError), (0, ValueError)])
def test_bad_max_seconds(images, bad, error):
    with pytest.raises(error, match="max_seconds must be"):
        fw.explain(Recorder(), images, "score-fam", layer="body", max_seconds=bad)


def test_a_model_with_a_fixed_input_size_is_probed_at_full_size():
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.head = nn.Linear(4 * 150 * 150, 2)

        def forward(self, x):
            return self.head(self.conv(x).flatten(1))

    model = Fixed()
    cost = budget.estimate(model, torch.rand(1, 3, 300, 300), model.conv)
    assert cost.probe == (300, 300) and cost.channels == 4


def test_a_token_layer_counts_its_channels_not_its_tokens():
    import torchvision

    vit = torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8
    )
    block = vit.encoder.layers[0]
    cost = budget.estimate(vit, torch.rand(2, 3, 64, 64), block)
    assert cost.channels == 8 and cost.forwards == 2 * 8  # (B, 1 + 16 tokens, 8 channels)


@pytest.mark.parametrize("option", ["budget", "max_channels"])
def test_an_approximate_run_is_estimated_by_the_channels_it_scores(option, one_thread):
    model = Recorder()
    cost = budget.estimate(model, torch.rand(2, 3, 64, 64), model.body, channel_limit=4)
    assert cost.channels == 16 and cost.scored == 4 and cost.forwards == 2 * 4
    x = torch.zeros(1, 3, 4096, 4096)
    with pytest.raises(ValueError) as err:
        fw.explain(model, x, "score-fam", layer="body", max_seconds=0.01, **{option: 4})
    # 4 masked copies and the one baseline pass of the default relu-baseline weights
    assert "up to 5 masked forward passes (4 of 16 channels x 1 image(s)" in str(err.value)
