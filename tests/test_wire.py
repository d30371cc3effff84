"""The wire format: compact uint8 buffers and their metadata decode back to the data."""

from __future__ import annotations

import numpy as np
import torch

from famwidget.widget import wire


def test_heatmap_is_uint8_bytes():
    h = torch.tensor([[0.0, 0.5], [1.0, 2.0]])
    data = wire.encode_heatmap(h)
    assert isinstance(data, bytes) and list(data) == [0, 128, 255, 255]


def test_channels_quantised_and_ranked():
    torch.manual_seed(0)
    a = torch.rand(40, 3, 5) * torch.arange(1, 41)[:, None, None]
    w = torch.zeros(40)
    w[7], w[30] = 2.0, -5.0
    data, info = wire.encode_channels(a, w, top=4)
    assert info["k"] == 4 and (info["h"], info["w"]) == (3, 5)
    assert info["ids"][:2] == [30, 7]  # |weight| x mean activation, largest first
    q = np.frombuffer(data, np.uint8).reshape(4, 3, 5).astype(np.float32)
    lo, scale = np.array(info["lo"]), np.array(info["scale"])
    decoded = lo[:, None, None] + q * scale[:, None, None]
    expected = a[info["ids"]].numpy()
    assert np.abs(decoded - expected).max() <= scale.max() / 2 + 1e-6
    assert len(data) == 4 * 3 * 5


def test_no_channels_for_methods_without_them():
    data, info = wire.encode_channels(None, None)
    assert data == b"" and info["k"] == 0


def test_thumbnails_keep_aspect_and_mean_colour():
    images = np.zeros((2, 128, 64, 3), np.uint8)
    images[1] = 200
    data, info = wire.thumbnails(images, height=32)
    assert (info["n"], info["h"], info["w"]) == (2, 32, 16)
    thumbs = np.frombuffer(data, np.uint8).reshape(2, 32, 16, 3)
    assert thumbs[0].max() == 0 and thumbs[1].min() == 200


def test_explanation_payload_under_colab_message_limit():
    """A 224x224 explanation with its channel stack stays far below 1 MB."""
    heat = wire.encode_heatmap(torch.rand(224, 224))
    chans, _ = wire.encode_channels(torch.rand(512, 7, 7), torch.rand(512))
    image = wire.encode_image(np.zeros((224, 224, 3), np.uint8))
    assert len(heat) + len(chans) + len(image) < 1_000_000
