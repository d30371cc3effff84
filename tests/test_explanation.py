"""The Explanation record: indexing, NumPy, overlays, and input checks of fw.explain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import famwidget as fw
from famwidget.explanation import Explanation, colormap_rgb, to_uint8_rgb


@pytest.fixture
def exp() -> Explanation:
    heat = torch.zeros(2, 4, 6)
    heat[0, 1, 2] = 1.0
    heat[1] = torch.linspace(0, 1, 24).reshape(4, 6)
    return Explanation(
        heatmap=heat,
        method="m",
        layer="l",
        target="t",
        weights=torch.ones(2, 3),
        scores=torch.tensor([1.0, 2.0]),
    )


def test_index_and_numpy(exp):
    one = exp[1]
    assert len(one) == 1 and one.scores.tolist() == [2.0] and one.weights.shape == (1, 3)
    assert exp[-1].heatmap.equal(one.heatmap)
    arr = exp.numpy()
    assert arr.dtype == np.float32 and arr.shape == (2, 4, 6) and arr[0, 1, 2] == 1.0
    with pytest.raises(IndexError, match="out of range"):
        exp[2]


def test_overlay_alpha_extremes(exp):
    image = np.full((4, 6, 3), 100, np.uint8)
    assert np.array_equal(np.asarray(exp.overlay(image, alpha=0.0)), image)
    full = np.asarray(exp.overlay(image, alpha=1.0, cmap="gray"))
    assert full[1, 2].tolist() == [255, 255, 255] and full[0, 0].tolist() == [0, 0, 0]
    half = np.asarray(exp.overlay(image, alpha=0.5, cmap="gray"))
    assert half[1, 2].tolist() == [178, 178, 178]  # (100 + 255) / 2, rounded
    assert isinstance(exp.overlay(Image.fromarray(image)), Image.Image)


def test_overlay_resizes_heatmap_to_image(exp):
    big = exp.overlay(np.zeros((8, 12, 3), np.uint8), alpha=1.0, index=1, cmap="gray")
    assert big.size == (12, 8)


def test_overlay_rejects_bad_arguments(exp):
    with pytest.raises(ValueError, match="alpha"):
        exp.overlay(np.zeros((4, 6, 3), np.uint8), alpha=2)
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        exp.overlay(np.zeros((4, 6, 3), np.uint8), cmap="nope")
    with pytest.raises(TypeError, match="PIL image"):
        exp.overlay("picture.png")


def test_to_uint8_rgb_conversions():
    t = torch.zeros(3, 2, 2)
    t[0] = 1.0
    assert to_uint8_rgb(t)[0, 0].tolist() == [255, 0, 0]
    assert to_uint8_rgb(np.ones((2, 2), np.float32)).shape == (2, 2, 3)
    assert colormap_rgb(np.array([[0.0, 1.0]]), "gray").tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_explain_input_errors(tiny_embedding):
    with pytest.raises(TypeError, match="float tensor"):
        fw.explain(tiny_embedding, np.zeros((1, 3, 16, 16)))
    with pytest.raises(TypeError, match="floating tensor"):
        fw.explain(tiny_embedding, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        fw.explain(tiny_embedding, torch.zeros(16, 16))
    with pytest.raises(ValueError, match="unknown method 'nope'; available: .*grad-fam"):
        fw.explain(tiny_embedding, torch.zeros(1, 3, 16, 16), method="nope")
    with pytest.raises(TypeError, match="no option bogus; its options are"):
        fw.explain(tiny_embedding, torch.zeros(1, 3, 16, 16), bogus=1)
    with pytest.raises(ValueError, match="precision must be one of"):
        fw.explain(tiny_embedding, torch.zeros(1, 3, 16, 16), precision="fp8")
    with pytest.raises(TypeError, match="target must be"):
        fw.explain(tiny_embedding, torch.zeros(1, 3, 16, 16), target="embedding")
    with pytest.raises(TypeError, match="nn.Module"):
        fw.explain(lambda x: x, torch.zeros(1, 3, 16, 16))


def test_methods_lists_builtins():
    assert {"grad-fam", "grad-cam"} <= set(fw.methods())
