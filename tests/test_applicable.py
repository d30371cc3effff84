"""available_methods: which methods apply to a model, and the reason for each that does not."""

from __future__ import annotations

import torch
from torch import nn

import famwidget as fw
from famwidget.applicable import available_methods


class Gate(nn.Module):
    """A value-dependent branch: torch.fx cannot trace it, so fixations cannot walk it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if bool(x.sum() > 0) else -x


def test_an_embedding_net_gets_no_cam_methods(tiny_embedding, images):
    tiny_embedding.head = nn.Identity()  # a backbone: no classifier at the end
    notes = available_methods(tiny_embedding, images)
    assert notes["grad-fam"] is None and notes["score-fam"] is None
    assert "no class output" in notes["grad-cam"] and "no class output" in notes["score-cam"]
    assert notes["fixations"] is None
    assert "interpreter=" in notes["vebi"]
    assert all(len(m._forward_hooks) == 0 for m in tiny_embedding.modules())


def test_a_classifier_gets_cam_methods_and_unwalkable_graphs_lose_fixations(images):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Gate(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model.append(nn.Linear(4, 3))
    notes = available_methods(model, images)
    assert notes["grad-cam"] is None and notes["score-cam"] is None
    assert notes["fixations"]  # a reason, not None
    bad = available_methods(model, images, layer="2")  # the 1x1 pool
    assert "1x1" in bad["grad-fam"] or "cannot be read" in bad["grad-fam"]


def test_the_explorer_offers_what_applies_and_says_why(tiny_embedding, images):
    tiny_embedding.head = nn.Identity()
    w = fw.Explorer(tiny_embedding, images)
    try:
        assert "grad-cam" not in w.methods and "grad-fam" in w.methods
        assert "no class output" in w.method_notes["grad-cam"]
    finally:
        w.close()
