"""Honest maps: scale-free normalisation, constant maps flagged with their reason, 1x1 refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import famwidget as fw
from famwidget.explanation import DegenerateMapWarning
from famwidget.maps import cam_reasons, is_constant, minmax


def classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()


def blobs(n: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, 16, 16)


def test_minmax_is_scale_free():
    torch.manual_seed(0)
    m = torch.rand(2, 5, 7) + 3.0
    assert torch.allclose(minmax(m * 1e-13), minmax(m), atol=1e-6)
    tiny = 1e-13 * (1 + 3 * torch.rand(1, 4, 4))  # values about 1e-13 with a 4x spread
    out = minmax(tiny)
    assert out.min() == 0 and out.max() == 1
    assert torch.equal(minmax(torch.full((1, 3, 3), 5.0)), torch.zeros(1, 3, 3))
    noise = 1.0 + 1e-7 * torch.rand(1, 4, 4)  # float rounding, not a map
    assert bool(is_constant(noise)[0]) and minmax(noise).abs().max() == 0


def test_cam_reasons_say_why_a_map_is_constant():
    acts = torch.rand(4, 3, 4, 4)
    acts[0] = 2.0  # dead layer: every channel constant
    weights = torch.ones(4, 3)
    weights[1] = 0.0  # a target that does not vary with the layer
    weights[2] = -1.0  # positive activations, negative weights: ReLU leaves nothing
    reasons = cam_reasons(acts, weights)
    assert "dead layer" in reasons[0]
    assert "every channel weight is zero" in reasons[1]
    assert "negative or zero everywhere" in reasons[2]
    assert reasons[3] is None


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("grad-fam", {}),
        ("grad-cam", {}),
        ("score-fam", {}),
        ("score-cam", {"weights": "raw"}),
        ("score-cam", {"weights": "relu-baseline"}),
    ],
)
def test_scaling_the_last_layer_by_1e13_leaves_the_map_unchanged(method, options):
    model, x = classifier(), blobs()
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled[-1].weight.mul_(1e-13)
        scaled[-1].bias.mul_(1e-13)
    a = fw.explain(model, x, method=method, layer="3", precision="fp32", **options)
    b = fw.explain(scaled, x, method=method, layer="3", precision="fp32", **options)
    assert a.heatmap.std() > 0.05
    r = torch.corrcoef(torch.stack([a.heatmap.flatten(), b.heatmap.flatten()]))[0, 1]
    assert r > 0.99999, r
    assert a.degenerate == b.degenerate  # the same verdict at any scale


def test_softmax_over_tiny_scores_is_flagged_not_silent():
    model, x = classifier(), blobs(1)
    with torch.no_grad():
        model[-1].weight.mul_(1e-13)
        model[-1].bias.mul_(1e-13)
    with pytest.warns(DegenerateMapWarning, match="softmax weighs every channel the same"):
        exp = fw.explain(model, x, method="score-cam", layer="3", precision="fp32")
    assert "weights='raw'" in exp.degenerate


def test_equal_masked_scores_are_flagged():
    model, x = classifier(), blobs(2)
    with pytest.warns(DegenerateMapWarning, match="every masked copy scored the same"):
        exp = fw.explain(model, x, method="score-fam", layer="3", target=lambda out: out.sum(1) * 0)
    assert exp.degenerate.startswith("image 0: every masked copy scored the same")
    assert exp[1].degenerate.startswith("every masked copy scored the same")


def test_dead_layer_and_zero_gradient_are_flagged():
    model, x = classifier(), blobs(1)
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.fill_(-1.0)  # ReLU after it: all zero
    with pytest.warns(DegenerateMapWarning, match="dead layer"):
        exp = fw.explain(model, x, method="grad-fam", layer="3")
    assert "dead layer" in exp.degenerate and exp.heatmap.abs().max() == 0
    fine = fw.explain(classifier(), x, method="grad-fam", layer="3")
    assert fine.degenerate is None and fine[0].degenerate is None


def test_a_1x1_layer_is_refused_naming_better_layers():
    model, x = classifier(), blobs(1)
    with pytest.raises(
        ValueError, match=r"1x1 spatial output.*Layers whose output can be read.*'3'"
    ):
        fw.explain(model, x, method="grad-cam", layer="4")
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
