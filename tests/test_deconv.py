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


# ----------------------------------------------------------------------------- modern ops


class _GuidedAct(torch.autograd.Function):
    """Any activation whose backward is the guided rule ``g * [x > 0] * [g > 0]``."""

    @staticmethod
    def forward(ctx, x, act):
        ctx.save_for_backward(x)
        return act(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0), None


class GuidedAct(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x):
        return _GuidedAct.apply(x, lambda t: self.act(t.clone()))


class FrozenLayerNorm(nn.Module):
    """A LayerNorm over ``dim`` whose mean and variance are constants for autograd."""

    def __init__(self, norm: nn.LayerNorm, dim: int) -> None:
        super().__init__()
        self.norm, self.dim = norm, dim

    def forward(self, x):
        mu = x.mean(self.dim, keepdim=True).detach()
        var = x.var(self.dim, unbiased=False, keepdim=True).detach()
        shape = [1] * x.dim()
        shape[self.dim] = -1
        w, b = self.norm.weight.reshape(shape), self.norm.bias.reshape(shape)
        return (x - mu) / torch.sqrt(var + self.norm.eps) * w + b


def guided_reference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose autograd gradient is the deconvnet's rules without the stride
    fix: guided activations, frozen gates (squeeze-excitation) and frozen LayerNorm statistics."""
    import copy
    import types

    from torchvision.models.convnext import LayerNorm2d
    from torchvision.ops import SqueezeExcitation

    from famwidget.explainers.graph import ACTIVATIONS

    ref = copy.deepcopy(model).eval()
    for name, m in list(ref.named_modules()):
        if isinstance(m, SqueezeExcitation):
            m.forward = types.MethodType(lambda self, x: self._scale(x).detach() * x, m)
        replacement = None
        if isinstance(m, ACTIVATIONS) and not isinstance(m, (nn.Sigmoid, nn.Hardsigmoid)):
            if hasattr(m, "inplace"):
                m.inplace = False
            replacement = GuidedAct(m)
        elif isinstance(m, LayerNorm2d):
            replacement = FrozenLayerNorm(m, 1)
        elif isinstance(m, nn.LayerNorm):
            replacement = FrozenLayerNorm(m, -1)
        if replacement is not None:
            parent, _, child = name.rpartition(".")
            setattr(ref.get_submodule(parent) if parent else ref, child, replacement)
    return ref


def autograd_signal(ref: nn.Module, x: torch.Tensor, layer: str, channels) -> torch.Tensor:
    """Autograd's gradient of ``½‖A_c‖²`` at the pixels, through ``ref``."""
    kept = {}
    handle = ref.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    xi = x.clone().requires_grad_(True)
    try:
        ref(xi)
    finally:
        handle.remove()
    a = kept["a"]
    pick = F.one_hot(torch.as_tensor(channels), a.shape[1]).to(a.dtype)[:, :, None, None]
    (g,) = torch.autograd.grad(a, xi, grad_outputs=(a * pick).detach())
    return g


class GatedNet(nn.Module):
    """conv → ReLU → squeeze-excitation gate → conv → GELU; no residual."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.ops import SqueezeExcitation

        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.se = SqueezeExcitation(8, 4)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.conv2(self.se(self.relu(self.conv1(x)))))


def test_a_gate_scales_the_signal_branch_by_the_recorded_gate():
    """Equals autograd on the same network with the gate frozen (a linear scale)."""
    torch.manual_seed(0)
    net = GatedNet()
    x = torch.randn(2, 3, 12, 12)
    signal = Deconvnet(net, stride_fix=False).signal(x, "act", [1, 4])
    expected = autograd_signal(guided_reference(net), x, "act", [1, 4])
    assert expected.abs().max() > 0
    assert torch.allclose(signal, expected, atol=1e-6 * float(expected.abs().max()), rtol=1e-4)
    # The gate matters: without it (gate = 1) the signal differs.
    net.se = nn.Identity()
    ungated = Deconvnet(net, stride_fix=False).signal(x, "act", [1, 4])
    assert not torch.allclose(ungated, signal, rtol=1e-2)


class NormNet(nn.Module):
    """ConvNeXt-like: conv → LayerNorm2d → conv → permute → LayerNorm → Linear → GELU → permute
    → GroupNorm → ReLU, and the same over tokens."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.convnext import LayerNorm2d

        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.ln2d = LayerNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 12)
        self.act = nn.GELU()
        self.gn = nn.GroupNorm(3, 12)
        self.relu = nn.ReLU()
        with torch.no_grad():
            for norm in (self.ln2d, self.ln, self.gn):
                norm.weight.uniform_(0.5, 2.0)
                norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        h = self.conv2(self.ln2d(self.conv1(x))).permute(0, 2, 3, 1)
        h = self.act(self.fc(self.ln(h))).permute(0, 3, 1, 2)
        return self.relu(self.gn(h))


class FrozenGroupNorm(nn.Module):
    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x):
        g = x.reshape(x.shape[0], self.norm.num_groups, -1)
        mu, var = g.mean(2, keepdim=True).detach(), g.var(2, unbiased=False, keepdim=True).detach()
        h = ((g - mu) / torch.sqrt(var + self.norm.eps)).reshape(x.shape)
        return h * self.norm.weight[:, None, None] + self.norm.bias[:, None, None]


def test_normalisations_scale_by_their_recorded_affine_scale():
    """LayerNorm over channels (LayerNorm2d), channels-last between permutes, GroupNorm:
    autograd with the statistics frozen."""
    torch.manual_seed(0)
    net = NormNet()
    x = torch.randn(2, 3, 10, 10)
    signal = Deconvnet(net).signal(x, "relu", [0, 7])
    ref = guided_reference(net)
    ref.gn = FrozenGroupNorm(ref.gn)
    expected = autograd_signal(ref, x, "relu", [0, 7])
    assert expected.abs().max() > 0
    assert torch.allclose(signal, expected, atol=1e-6 * float(expected.abs().max()), rtol=1e-4)
    identity = Deconvnet(net, bn="identity").signal(x, "relu", [0, 7])
    assert not torch.allclose(identity, signal, rtol=1e-2)


def test_a_channels_last_layer_is_read_on_its_last_axis():
    torch.manual_seed(0)
    net = NormNet()
    x = torch.randn(1, 3, 10, 10)
    signal = Deconvnet(net).signal(x, "act", 5)  # (B,h,w,C): GELU between the permutes
    ref = guided_reference(net)
    kept = {}
    ref.act.register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    xi = x.clone().requires_grad_(True)
    ref(xi)
    a = kept["a"]
    pick = F.one_hot(torch.tensor([5]), 12).float()[:, None, None, :]
    (expected,) = torch.autograd.grad(a, xi, grad_outputs=(a * pick).detach())
    assert torch.allclose(signal, expected, atol=1e-6 * float(expected.abs().max()), rtol=1e-4)


class ShuffleNet(nn.Module):
    """conv → channel shuffle (view, transpose, view) → chunk → conv on one half → cat."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.out = nn.Identity()

    def forward(self, x):
        h = self.conv1(x)
        b, c, hh, ww = h.size()
        h = torch.transpose(h.view(b, 2, c // 2, hh, ww), 1, 2).contiguous().view(b, c, hh, ww)
        x1, x2 = h.chunk(2, dim=1)
        return self.out(torch.cat((self.relu(self.conv2(x2)), x1), dim=1))


def test_channel_shuffle_and_split_cat_are_exact_index_bookkeeping():
    torch.manual_seed(0)
    net = ShuffleNet()
    x = torch.randn(2, 3, 8, 8)
    for channel in range(8):
        signal = Deconvnet(net, stride_fix=False).signal(x, "out", channel)
        expected = autograd_signal(guided_reference(net), x, "out", [channel, channel])
        assert expected.abs().max() > 0
        assert torch.allclose(signal, expected, atol=1e-6)
    # The shuffle puts conv1's channel g*4 + k at 2k + g; x1 (shuffled 0-3) is output 4-7:
    # output 4, 5, 6 are conv1's channels 0, 4, 1, straight back through conv1 alone.
    with torch.no_grad():
        h = net.conv1(x)
    for out, source in ((4, 0), (5, 4), (6, 1)):
        direct = F.conv_transpose2d(
            h[:, source : source + 1], net.conv1.weight[source : source + 1], padding=1
        )
        assert torch.allclose(Deconvnet(net).signal(x, "out", out), direct, atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_resize_is_sent_back_by_the_adjoint_of_the_upsampling(mode):
    """``<A x, y> = <x, A^T y>`` for the upsampling ``A`` and random ``x``, ``y``."""
    from famwidget.explainers import deconv_rules as rules
    from famwidget.explainers.graph import _execute, record_forward, signal_nodes, trace

    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2.5, mode=mode)

    model = Up()
    gm = trace(model, "test")
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    x, y = torch.randn(2, 3, 6, 7), torch.randn(2, 3, 15, 17)
    rec = record_forward(gm, x, keep=[node])
    ax = rec.output
    replay = rules.replay_record(node, rec.records[node], signal_nodes(gm), keep_values=False)
    [(source, aty)] = rules.transpose(lambda *a: _execute(gm, *a), node, replay, y)
    assert source.op == "placeholder" and aty.shape == x.shape
    left, right = (ax * y).sum().double(), (x * aty).sum().double()
    assert torch.allclose(left, right, rtol=1e-5)


def test_average_pool_stride_fix_removes_the_grid():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, 2, 1))
    images = F.avg_pool2d(torch.rand(4, 3, 72, 72), 9, stride=1)
    with torch.no_grad():
        channel = int(net(images).square().sum(dim=(0, 2, 3)).argmax())
    plain = stride_peak(deconvnet(net, images, "2", channel, stride_fix=False))
    fixed = stride_peak(deconvnet(net, images, "2", channel, stride_fix=True))
    print(f"avg pool stride-frequency peak: without fix {plain.tolist()}, with {fixed.tolist()}")
    assert bool((plain > 5).all()) and bool((fixed < 2).all())


def _mnv3():
    return torchvision.models.mobilenet_v3_small(weights=None), "features.1"


def _effnet():
    return torchvision.models.efficientnet_b0(weights=None), "features.1"


def _convnext():
    return torchvision.models.convnext_tiny(weights=None), "features.1.0.block"


@pytest.mark.parametrize("build", [_mnv3, _effnet, _convnext], ids=["mnv3", "effnet", "convnext"])
def test_without_the_fix_it_is_guided_backprop_on_modern_networks(build):
    """Squeeze-excitation gates, Hardswish / SiLU / GELU, BatchNorm, LayerNorm2d, channels-last
    LayerNorm and Linear layers, depthwise and strided convs: equal to autograd's guided
    backpropagation with the gates and the LayerNorm statistics frozen."""
    torch.manual_seed(0)
    model, layer = build()
    model.eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        a = {}
        h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: a.setdefault("a", o))
        model(x)
        h.remove()
    channels = a["a"].square().sum((2, 3)).argmax(dim=1).tolist()
    signal = Deconvnet(model, stride_fix=False).signal(x, layer, channels)
    expected = autograd_signal(guided_reference(model), x, layer, channels)
    peak = float(expected.abs().max())
    assert peak > 0
    assert torch.allclose(signal, expected, atol=1e-5 * peak, rtol=1e-3)


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
    }


def _same(model: nn.Module, before: dict) -> bool:
    after = model.state_dict()
    return (
        all(torch.equal(after[k], v) for k, v in before["state"].items())
        and [m.training for m in model.modules()] == before["modes"]
        and [p.requires_grad for p in model.parameters()] == before["flags"]
        and all(p.grad is g for p, g in zip(model.parameters(), before["grads"], strict=True))
        and not _has_hooks(model)
    )


def test_the_model_comes_back_exactly_also_after_errors():
    """Buffers (BatchNorm statistics, counters), modes, flags and grads; train mode included."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None)
    model.train()
    model.features[0][0].weight.requires_grad_(False)
    model.classifier[0].weight.grad = torch.ones_like(model.classifier[0].weight)
    before = _snapshot(model)
    x = torch.randn(2, 3, 48, 48)
    maps = deconvnet(model, x, "features", [0, 3])
    assert maps.shape == (2, 48, 48) and bool(torch.isfinite(maps).all())
    assert _same(model, before)
    with pytest.raises(ValueError, match="channel must be in"):
        deconvnet(model, x, "features", 10_000)
    assert _same(model, before)
    with pytest.raises(ValueError, match=r"must output a \(B,K,h,w\)"):
        deconvnet(model, x, "classifier.0", 0)
    assert _same(model, before)


class Attended(nn.Module):
    """conv → ReLU → self-attention over positions → conv → ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        h = self.relu1(self.conv1(x))
        b, c, hh, ww = h.shape
        t = h.flatten(2).transpose(1, 2)
        t = self.attn(t, t, t)[0]
        h = t.transpose(1, 2).reshape(b, c, hh, ww)
        return self.relu2(self.conv2(h))


def test_attention_is_refused_naming_it_and_the_layers_before_it():
    model = Attended()
    before = _snapshot(model)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(
        ValueError, match=r"attention module 'attn' \(MultiheadAttention\).*'conv1', 'relu1'"
    ):
        deconvnet(model, x, "relu2", 0)
    assert _same(model, before)
    assert deconvnet(model, x, "relu1", 0).max() == 1.0
    found = Deconvnet(model).explainable(x, ["relu1", "conv2", "relu2"])
    assert found["relu1"] is None and "MultiheadAttention" in found["relu2"]
    assert "MultiheadAttention" in found["conv2"]


# ----------------------------------------------------------------------------- coverage

FAMILIES = [  # (family, builder kwargs, a late layer, input size, heavy)
    ("resnet18", {}, "layer4", 64, False),
    ("resnext50_32x4d", {}, "layer4", 64, True),
    ("wide_resnet50_2", {}, "layer4", 64, True),
    ("vgg11", {}, "features.19", 64, True),
    ("densenet121", {}, "features", 64, False),
    ("mobilenet_v2", {}, "features", 64, False),
    ("mobilenet_v3_small", {}, "features", 64, False),
    ("efficientnet_b0", {}, "features", 64, False),
    ("efficientnet_v2_s", {}, "features", 64, True),
    ("mnasnet0_5", {}, "layers", 64, False),
    ("regnet_x_400mf", {}, "trunk_output", 64, False),
    ("regnet_y_400mf", {}, "trunk_output", 64, False),
    ("shufflenet_v2_x0_5", {}, "conv5", 64, False),
    ("squeezenet1_0", {}, "features", 64, False),
    ("googlenet", {"aux_logits": False, "init_weights": True}, "inception5b", 64, False),
    ("inception_v3", {"aux_logits": False, "init_weights": True}, "Mixed_7c", 128, True),
    ("alexnet", {}, "features", 64, True),
    ("convnext_tiny", {}, "features", 64, True),
    ("swin_t", {}, "features.0", 64, True),  # channels-last patch embedding, before attention
    ("swin_v2_t", {}, "features.0", 64, True),
    ("vit_b_16", {"image_size": 64}, "conv_proj", 64, True),  # the conv before attention
    ("maxvit_t", {}, "blocks.0.layers.0.layers.MBconv", 64, True),  # MBConv before attention
]


class _Stop(Exception):
    pass


def layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of ``layer``; the forward pass stops there (MaxViT needs 224 px beyond it)."""
    kept = {}

    def stop(m, i, o):
        kept["a"] = o
        raise _Stop

    h = model.get_submodule(layer).register_forward_hook(stop)
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        h.remove()
    return kept["a"]


@pytest.mark.parametrize(
    "arch, kwargs, layer, size",
    [
        pytest.param(a, k, layer, s, marks=[pytest.mark.slow] if heavy else [], id=a)
        for a, k, layer, s, heavy in FAMILIES
    ],
)
def test_torchvision_families(arch, kwargs, layer, size):
    """Random weights, small input, a late layer (the last before attention in transformers):
    a finite map in [0,1] that is not constant, from the channel with the most energy."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, **kwargs).eval()
    x = torch.randn(1, 3, size, size)
    deconv = Deconvnet(model)
    assert deconv.explainable(x, [layer]) == {layer: None}
    a = layer_output(model, layer, x)
    axis = 3 if arch.startswith("swin") else 1
    channel = int(a.square().sum(dim=[d for d in range(4) if d != axis]).argmax())
    maps = deconv.heatmap(x, layer, channel)
    assert maps.shape == (1, size, size) and bool(torch.isfinite(maps).all())
    assert maps.min() >= 0 and maps.max() == 1.0 and maps.std() > 0.01


def test_a_blank_map_is_never_silent():
    from famwidget.explanation import DegenerateMapWarning

    net = strided_net()
    with torch.no_grad():
        net[5].weight[2].zero_()
        net[5].bias[2] = -1.0  # channel 2 of layer "6" is dead everywhere
    x = torch.randn(2, 3, 16, 16)
    with pytest.warns(DegenerateMapWarning, match=r"image\(s\) \[0, 1\] is blank"):
        maps = deconvnet(net, x, "6", 2)
    assert maps.max() == 0


def test_the_fix_in_patch_embeddings_and_strided_depthwise_convs():
    """Kernel = stride = 4 (a patch embedding): without the fix a constant signal comes back as
    the kernel tiled (a grid at the stride); with it every interior pixel gets every tap, the
    kernel's sum. A strided depthwise conv: the fix acts on each channel alone."""
    torch.manual_seed(0)
    patch = nn.Conv2d(1, 1, 4, stride=4, bias=False)
    ones = torch.ones(1, 1, 4, 4)  # the output of a 16x16 input
    plain = conv_transpose(ones, patch, (16, 16), stride_fix=False)[0, 0]
    fixed = conv_transpose(ones, patch, (16, 16), stride_fix=True)[0, 0]
    w = patch.weight[0, 0]
    assert torch.allclose(plain, w.repeat(4, 4))
    assert torch.allclose(fixed[3:13, 3:13], w.sum().expand(10, 10), atol=1e-6)
    depthwise = nn.Conv2d(2, 2, 3, stride=2, padding=1, groups=2, bias=False)
    signal = torch.rand(1, 2, 4, 4)
    both = conv_transpose(signal, depthwise, (8, 8))
    for c in range(2):
        alone = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
        with torch.no_grad():
            alone.weight.copy_(depthwise.weight[c : c + 1])
        assert torch.allclose(
            both[:, c : c + 1], conv_transpose(signal[:, c : c + 1], alone, (8, 8))
        )


def test_wrapped_models_give_the_plain_model_s_maps():
    net = strided_net()
    x = torch.randn(2, 3, 16, 16)
    plain = deconvnet(net, x, "6", [1, 2])
    wrapped = nn.DataParallel(net)
    assert torch.equal(deconvnet(wrapped, x, "module.6", [1, 2]), plain)


@pytest.mark.parametrize("op", [lambda h: h * h, lambda h: 1.0 / (h + 2.0)], ids=["square", "inv"])
def test_a_product_that_is_no_fixed_scale_is_refused(op):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(op(self.conv(x)))

    with pytest.raises(ValueError, match="not a fixed scale"):
        deconvnet(Net(), torch.randn(1, 3, 8, 8), "relu", 0)


def _hook_counts(model: nn.Module) -> list[int]:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [len(getattr(m, k)) for m in model.modules() for k in kinds]


class _ScaledByItself(nn.Module):
    """conv → BatchNorm → h*h → ReLU: a square of the signal, refused in the replay."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.bn(self.conv(x))
        return self.relu(h * h)


def _bn_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Softmin(dim=1), nn.ReLU())


ERROR_PATHS = {
    "channel out of range": (_bn_net, "1", 99, "channel must be in"),
    "unknown relu rule": (_bn_net, "1", 0, "relu must be one of"),
    "module it cannot pass back": (_bn_net, "3", 0, r"module '2' \(Softmin\)"),
    "product of the signal": (_ScaledByItself, "relu", 0, "square of a signal is not a fixed"),
    "layer runs twice": (
        lambda: torchvision.models.resnet18(weights=None),
        "layer1.0.relu",
        0,
        "runs more than once",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_PATHS))
def test_every_error_path_hands_the_model_back_exactly(case):
    """Train mode with moved BatchNorm statistics, a frozen weight, a weight holding a .grad and
    a user's own forward hook: after each refusal, parameters, buffers (running_mean/var,
    num_batches_tracked), modes, flags, .grad objects and the hooks are as they were."""
    build, layer, channel, message = ERROR_PATHS[case]
    torch.manual_seed(0)
    model = build().train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)  # the statistics move away from their initial values
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.full_like(params[-1], 0.25)
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    before = {**_snapshot(model), "hooks": _hook_counts(model)}
    relu = "lrp" if case == "unknown relu rule" else "guided"
    with pytest.raises(ValueError, match=message):
        deconvnet(model, x, layer, channel, relu=relu)
    after = model.state_dict()
    changed = [k for k, v in before["state"].items() if not torch.equal(after[k], v)]
    assert changed == [], f"{case}: changed {changed}"
    assert [m.training for m in model.modules()] == before["modes"]
    assert [p.requires_grad for p in model.parameters()] == before["flags"]
    assert all(p.grad is g for p, g in zip(model.parameters(), before["grads"], strict=True))
    assert _hook_counts(model) == before["hooks"]
    n = len(calls)
    model(x)
    assert len(calls) == n + 1, "the user's hook still runs"
