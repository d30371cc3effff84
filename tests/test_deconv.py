"""Deconvnet / guided backprop with the stride fix: exact identities, grid artefacts, real nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from famwidget.explainers.deconv import Deconvnet, conv_transpose, deconvnet

pytestmark = pytest.mark.usefixtures("one_thread")


class _Guided(torch.autograd.Function):
    """ReLU whose backward is the guided rule ``g * [x > 0] * [g > 0]``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0)


class _Deconv(torch.autograd.Function):
    """ReLU whose backward is the deconvnet rule ``relu(g)``."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp_min(0)


def strided_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),  # overlapping windows
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
    )


@pytest.mark.parametrize("relu, function", [("guided", _Guided), ("deconvnet", _Deconv)])
def test_without_the_fix_it_is_guided_backprop_or_the_deconvnet(relu, function):
    """stride_fix=False is exactly autograd with the modified ReLU backward (odd sizes too)."""
    net = strided_net()
    x = torch.randn(2, 3, 15, 15)
    channels = [3, 7]
    signal = Deconvnet(net, stride_fix=False, relu=relu).signal(x, "6", channels)
    xi = x.clone().requires_grad_(True)
    h = xi
    for m in net:
        h = function.apply(h) if isinstance(m, nn.ReLU) else m(h)
    pick = F.one_hot(torch.tensor(channels), 16).float()[:, :, None, None]
    (expected,) = torch.autograd.grad(h, xi, grad_outputs=(h * pick).detach())
    assert expected.abs().max() > 0
    assert torch.allclose(signal, expected, atol=1e-6)


def test_the_fix_upsamples_then_applies_the_stride_one_transposed_conv():
    """A 3x3 all-ones kernel, stride 2: without the fix every other row gets 1 tap instead of 2."""
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    signal = torch.ones(1, 1, 4, 4)  # the output of an 8x8 input
    fixed = conv_transpose(signal, conv, (8, 8), stride_fix=True)[0, 0]
    plain = conv_transpose(signal, conv, (8, 8), stride_fix=False)[0, 0]
    # Fixed: the transposed 3x3 box filter of an all-ones 8x8 map (9 inside, 6 on edges, 4 corners).
    box = F.conv_transpose2d(torch.ones(1, 1, 8, 8), conv.weight, padding=1)[0, 0]
    assert torch.equal(fixed, box) and fixed[1:-1, 1:-1].unique().tolist() == [9.0]
    # Plain: odd rows/columns get 2 taps, even ones 1 → a grid of 1, 2, 4.
    assert plain[1:7, 1:7].unique().tolist() == [1.0, 2.0, 4.0]
    assert plain[1, 1] == 4.0 and plain[2, 2] == 1.0 and plain[1, 2] == 2.0


def stride_peak(maps: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """Energy on the stride-frequency lines of the 2-D FFT over that on nearby lines, ``(B,)``.

    The grid pattern of a stride-2 transposed conv is a modulation by ``(-1)^i``, which puts a
    copy of the map's (smooth) spectrum at frequency ``N/2``: a peak on the lines ``u = N/2``
    and ``v = N/2``, compared with lines 2..4 bins away.
    """
    spec = torch.fft.fft2(maps - maps.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    f = maps.shape[-1] // stride

    def line(k: int) -> torch.Tensor:
        return spec[:, k, :].mean(-1) + spec[:, :, k].mean(-1)

    nearby = torch.stack([line(f + d) for d in (-4, -3, -2, 2, 3, 4)]).mean(0)
    return line(f) / nearby


def test_stride_fix_removes_the_grid_at_the_stride_frequency():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
    )
    images = F.avg_pool2d(torch.rand(4, 3, 72, 72), 9, stride=1)  # smooth 64x64 images
    with torch.no_grad():
        energy = net(images).square().sum(dim=(0, 2, 3))
    channel = int(energy.argmax())
    plain = stride_peak(deconvnet(net, images, "5", channel, stride_fix=False))
    fixed = stride_peak(deconvnet(net, images, "5", channel, stride_fix=True))
    print(f"stride-frequency peak: without fix {plain.tolist()}, with fix {fixed.tolist()}")
    # Measured (torch 2.14 CPU): 8.3-17.4 without the fix, 0.97-1.20 with it (8.5-14.5x lower).
    assert bool((plain > 5).all()) and bool((fixed < 2).all())
    assert bool((plain / fixed > 5).all())


def _state(model: nn.Module) -> list:
    return [m.training for m in model.modules()] + [p.requires_grad for p in model.parameters()]


def _has_hooks(model: nn.Module) -> bool:
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules()
    )


@pytest.mark.parametrize(
    "arch, layers",
    [
        ("vgg11", ["features.18", "features.8"]),
        ("resnet18", ["layer4", "layer2.0", "layer3.1.conv1", "relu"]),
    ],
)
def test_torchvision_networks(arch, layers):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    model.train()
    next(model.parameters()).requires_grad_(False)  # a frozen layer stays frozen
    before = _state(model)
    images = torch.randn(2, 3, 64, 64)
    for layer in layers:
        maps = deconvnet(model, images, layer, [1, 5])
        assert maps.shape == (2, 64, 64) and maps.dtype == torch.float32
        assert bool(torch.isfinite(maps).all())
        assert maps.min() >= 0 and maps.max() == 1.0
    other = deconvnet(model, images[:1], layers[0], 1, stride_fix=False, relu="deconvnet")
    assert other.shape == (1, 64, 64) and other.max() == 1.0
    assert _state(model) == before and not _has_hooks(model)
    assert all(p.grad is None for p in model.parameters())


def test_channels_per_image_match_single_calls():
    net = strided_net()
    x = torch.randn(3, 3, 16, 16)
    together = deconvnet(net, x, "4", [0, 5, 9])
    for i, c in enumerate([0, 5, 9]):
        assert torch.allclose(together[i], deconvnet(net, x[i], "4", c)[0], atol=1e-6)
    assert torch.equal(deconvnet(net, x, "4", 5)[1], together[1])


def test_maps_do_not_depend_on_the_scale_of_the_activations():
    """Untrained nets can have tiny activations (1e-16): the map must not vanish under minmax."""
    net = strided_net()
    for m in net:
        if isinstance(m, nn.Conv2d):
            m.bias = None  # positively homogeneous: scaling the image scales every activation
    x = torch.rand(2, 3, 16, 16)
    reference = deconvnet(net, x, "6", 2)
    tiny = deconvnet(net, x * 1e-15, "6", 2)
    assert reference.amax() == 1.0 and torch.allclose(tiny, reference, atol=1e-4)


def test_residual_addition_splits_the_signal_by_contribution():
    """``out = a + b``: the two summands get ``R*|a|/(|a|+|b|)`` and ``R*|b|/(|a|+|b|)``."""

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 1, 1, bias=False)
            self.b = nn.Conv2d(1, 1, 1, bias=False)
            with torch.no_grad():
                self.a.weight.fill_(3.0)
                self.b.weight.fill_(1.0)

        def forward(self, x):
            return self.a(x) + self.b(x)

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Residual()

        def forward(self, x):
            return self.block(x)

    x = torch.rand(1, 1, 4, 4) + 0.5
    model = Wrapped()
    assert torch.allclose(Deconvnet(model).signal(x, "block.b", 0), x)
    assert torch.allclose(Deconvnet(model).signal(x, "block.a", 0), 9 * x)  # 3x, back through 3
    # From the sum 4x: a gets 3/4 of it (3x, then through weight 3), b gets 1/4 (x): 9x + x.
    # (Gradient-style passing of the full signal to both summands would give 16x.)
    assert torch.allclose(Deconvnet(model).signal(x, "block", 0), 10 * x)


def test_clear_errors():
    net = strided_net()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="channel must be in"):
        deconvnet(net, x, "4", 16)
    with pytest.raises(ValueError, match="relu must be one of"):
        deconvnet(net, x, "4", 0, relu="lrp")
    with pytest.raises(ValueError, match="valid names"):
        deconvnet(net, x, "nope", 0)
    weird = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softmin(dim=1), nn.ReLU())
    with pytest.raises(ValueError, match=r"module '1' \(Softmin\).*layers it can explain.*'0'"):
        deconvnet(weird, x, "2", 0)
    resnet = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match="runs more than once"):
        deconvnet(resnet, torch.randn(1, 3, 32, 32), "layer1.0.relu", 0)
