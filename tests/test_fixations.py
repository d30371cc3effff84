"""CNN Fixations: hand-built networks where the path back to the image is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import famwidget as fw
from famwidget.explainers.fixations import backtrack, blur, inliers, pixels, smallest_share
from famwidget.targets import ClassLogit, Dimension, Embedding, Predicted, Similarity


def fixate(model: nn.Module, images: torch.Tensor, **options) -> torch.Tensor:
    """The raw fixations ``(N,5)`` rows ``(b, c, y, x, s)``."""
    return backtrack(model, images, **options)[0]


def pixel_set(points: torch.Tensor, b: int = 0) -> set[tuple[int, int]]:
    rows = points[points[:, 0] == b]
    return {(int(y), int(x)) for y, x in rows[:, 2:4].tolist()}


def channel_set(points: torch.Tensor, b: int = 0) -> set[int]:
    return {int(c) for c in points[points[:, 0] == b][:, 1].tolist()}


def single_pixel(channels: int, size: int, *where: tuple[int, int, int, float]) -> torch.Tensor:
    """A (1, channels, size, size) image, zero except ``value`` at ``(c, y, x)`` for each entry."""
    x = torch.zeros(1, channels, size, size)
    for c, y, xx, value in where:
        x[0, c, y, xx] = value
    return x


def set_weight(module: nn.Module, weight: torch.Tensor) -> nn.Module:
    with torch.no_grad():
        module.weight.copy_(weight)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()
    return module


# ----------------------------------------------------------------------------- a class from a patch


def colour_net() -> nn.Sequential:
    """Class 0 = "red patch" (input channel 0), class 1 = "blue patch" (input channel 2)."""
    conv1 = nn.Conv2d(3, 2, 3, padding=1)
    w1 = torch.zeros(2, 3, 3, 3)
    w1[0, 0] = 1.0  # red detector
    w1[1, 2] = 1.0  # blue detector
    conv2 = nn.Conv2d(2, 2, 3, padding=1)
    w2 = torch.zeros(2, 2, 3, 3)
    w2[0, 0] = 0.2
    w2[0, 0, 1, 1] = 1.0
    w2[1, 1] = 0.2
    w2[1, 1, 1, 1] = 1.0
    head = nn.Linear(2, 2)
    return nn.Sequential(
        set_weight(conv1, w1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        set_weight(conv2, w2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        set_weight(head, torch.tensor([[1.0, -1.0], [-1.0, 1.0]])),
    )


def two_patches(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.rand(1, 3, 32, 32, generator=g)
    x[0, 0, 4:10, 20:28] += 1.0  # red patch: rows 4-9, cols 20-27
    x[0, 2, 18:26, 3:9] += 1.0  # blue patch: rows 18-25, cols 3-8
    return x


RED = (range(4, 10), range(20, 28))
BLUE = (range(18, 26), range(3, 9))


@pytest.mark.parametrize("loc", ["center", "argmax"])
@pytest.mark.parametrize(("cls", "patch", "channel"), [(0, RED, 0), (1, BLUE, 2)])
def test_class_logit_is_traced_to_its_patch(loc, cls, patch, channel):
    model, x = colour_net(), two_patches()
    points = fixate(model, x, target=ClassLogit(cls), loc=loc)
    assert len(points) > 0
    assert channel_set(points) == {channel}
    rows, cols = patch
    assert all(y in rows and xx in cols for y, xx in pixel_set(points))
    exp = fw.explain(model, x, method="fixations", target=ClassLogit(cls), loc=loc)
    peak = divmod(int(exp.heatmap[0].argmax()), 32)
    assert peak[0] in rows and peak[1] in cols
    assert float(exp.heatmap.max()) == 1.0 and float(exp.heatmap.min()) == 0.0


def test_default_target_of_a_classifier_is_the_predicted_class():
    model, x = colour_net(), two_patches()
    x[0, 2] *= 3  # blue wins
    exp = fw.explain(model, x, method="fixations")
    assert exp.target == "Predicted()"
    logits = model(x)
    assert int(logits.argmax()) == 1
    assert torch.allclose(exp.scores, logits.max(dim=1).values)
    rows, cols = BLUE
    assert all(int(y) in rows and int(xx) in cols for y, xx in exp.points[0].tolist())


# ----------------------------------------------------------------------------- residual add


class Shifted(nn.Module):
    """``relu(branch(x) + x)``, torchvision style (``out += identity``, in-place ReLU).

    ``branch`` copies the pixel up-left of each position, times ``gain``.
    """

    def __init__(self, gain: float) -> None:
        super().__init__()
        w = torch.zeros(1, 1, 3, 3)
        w[0, 0, 0, 0] = gain
        self.branch = set_weight(nn.Conv2d(1, 1, 3, padding=1, bias=False), w)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.branch(x)
        out += identity
        return self.relu(out)


@pytest.mark.parametrize(
    ("gain", "loc", "expected"),
    [
        (0.5, "center", (5, 5)),  # the skip dominates: straight to the pixel
        (0.5, "argmax", (5, 5)),
        (2.0, "center", (6, 6)),  # the branch dominates at (6, 6): its window centre
        (2.0, "argmax", (5, 5)),  # ... whose largest contribution is the pixel
    ],
)
def test_residual_add_follows_the_larger_summand(gain, loc, expected):
    x = single_pixel(1, 12, (0, 5, 5, 1.0))
    points = fixate(Shifted(gain), x, loc=loc)
    assert pixel_set(points) == {expected}


class LateMutation(nn.Module):
    """The add reads ``a``; afterwards ``a`` is overwritten in place (``a.sub_(100)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = set_weight(nn.Conv2d(1, 1, 1, bias=False), torch.ones(1, 1, 1, 1))
        w = torch.zeros(1, 1, 3, 3)
        w[0, 0, 0, 0] = 1.0
        self.b = set_weight(nn.Conv2d(1, 1, 3, padding=1, bias=False), w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        out = a + 0.6 * self.b(x)
        a.sub_(100.0)
        return out + 0.0 * a


def test_in_place_ops_do_not_rewrite_recorded_inputs():
    # out peaks at (6, 6): a = 0.7 (its own pixel) + 0.6 * b = 0.6 (the pixel (5, 5)). The add
    # must compare a = 0.7 with 0.6 and follow a to (6, 6); with a overwritten (-99.3) it would
    # follow b to (5, 5).
    x = single_pixel(1, 12, (0, 5, 5, 1.0), (0, 6, 6, 0.7))
    model = LateMutation()
    with torch.no_grad():
        assert divmod(int(model(x)[0, 0].argmax()), 12) == (6, 6)
    assert pixel_set(fixate(model, x, loc="argmax")) == {(6, 6)}


# ----------------------------------------------------------------------------- max pool


def pooled_reference(x: torch.Tensor, k: int, s: int, p: int) -> tuple[torch.Tensor, dict]:
    """Max pool by loops: pooled map and, per cell, the (y, x) of its max (padding excluded)."""
    h, w = x.shape
    out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    pooled = torch.empty(out_h, out_w)
    switch = {}
    for i in range(out_h):
        for j in range(out_w):
            y0, x0 = max(0, i * s - p), max(0, j * s - p)
            y1, x1 = min(h, i * s - p + k), min(w, j * s - p + k)
            window = x[y0:y1, x0:x1]
            r, c = divmod(int(window.argmax()), window.shape[1])
            pooled[i, j] = window.max()
            switch[(i, j)] = (y0 + r, x0 + c)
    return pooled, switch


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_max_pool_follows_its_switch_and_never_the_padding(sign):
    g = torch.Generator().manual_seed(3)
    x = sign * (0.1 + torch.rand(1, 1, 9, 9, generator=g))  # all negative for sign -1
    model = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1))
    pooled, switch = pooled_reference(x[0, 0], 3, 2, 1)
    # the embedding is the pooled map's mean: its sign picks the pooled cell (argmax of s * map)
    cell = divmod(int((sign * pooled).argmax()), pooled.shape[1])
    assert pixel_set(fixate(model, x)) == {switch[cell]}


# ----------------------------------------------------------------------------- concatenation


class TwoBranches(nn.Module):
    """``cat([a(x), b(x)])`` with a: 2 channels reading input 0, b: 3 channels reading input 2."""

    def __init__(self, pick: int) -> None:
        super().__init__()
        wa = torch.zeros(2, 3, 1, 1)
        wa[:, 0] = 1.0
        wb = torch.zeros(3, 3, 1, 1)
        wb[:, 2] = 1.0
        self.a = set_weight(nn.Conv2d(3, 2, 1, bias=False), wa)
        self.b = set_weight(nn.Conv2d(3, 3, 1, bias=False), wb)
        head = torch.zeros(1, 5, 1, 1)
        head[0, pick] = 1.0
        self.head = set_weight(nn.Conv2d(5, 1, 1, bias=False), head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


@pytest.mark.parametrize(("pick", "channel", "pixel"), [(3, 2, (10, 10)), (1, 0, (3, 3))])
def test_concatenation_routes_by_channel_offset(pick, channel, pixel):
    x = single_pixel(3, 14, (0, 3, 3, 5.0), (2, 10, 10, 1.0))
    points = fixate(TwoBranches(pick), x)
    assert pixel_set(points) == {pixel}
    assert channel_set(points) == {channel}


# ----------------------------------------------------------------------------- grouped convs


@pytest.mark.parametrize(("dim", "group"), [(0, {0, 1}), (1, {2, 3})])
def test_grouped_conv_stays_within_its_group(dim, group):
    conv = set_weight(nn.Conv2d(4, 2, 3, padding=1, groups=2, bias=False), torch.ones(2, 2, 3, 3))
    x = single_pixel(4, 12, (0, 6, 6, 10.0), (1, 2, 2, 0.5), (3, 6, 6, 1.0), (2, 9, 9, 0.2))
    points = fixate(nn.Sequential(conv), x, target=Dimension(dim), loc="argmax")
    assert channel_set(points) <= group and len(points) == 1
    expected = {0: (6, 6), 1: (6, 6)}[dim]
    assert pixel_set(points) == {expected}


def test_depthwise_conv_keeps_the_channel():
    conv = set_weight(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), torch.ones(4, 1, 3, 3))
    x = single_pixel(4, 10, (0, 2, 2, 9.0), (1, 7, 7, 0.3), (2, 4, 8, 0.1), (3, 8, 1, 5.0))
    for d, pixel in [(1, (7, 7)), (2, (4, 8))]:
        points = fixate(nn.Sequential(conv), x, target=Dimension(d), loc="argmax")
        assert channel_set(points) == {d} and pixel_set(points) == {pixel}


# ----------------------------------------------------------------------------- conv positions


def test_conv_position_through_stride_padding_dilation():
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 2, 0] = 1.0  # out[y, x] = in[2y - 2 + 4, 2x - 2 + 0]
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=2, dilation=2, bias=False)
    model = nn.Sequential(set_weight(conv, w))
    x = single_pixel(1, 16, (0, 10, 6, 1.0))
    out = model(x)
    assert divmod(int(out[0, 0].argmax()), out.shape[-1]) == (4, 4)
    assert pixel_set(fixate(model, x, loc="center")) == {(8, 8)}  # 4 * 2 - 2 + 2 * 1
    assert pixel_set(fixate(model, x, loc="argmax")) == {(10, 6)}


def test_negative_embedding_dimension_is_explained_by_negative_contributions():
    w = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    model = nn.Sequential(set_weight(nn.Conv2d(2, 1, 1, bias=False), w))
    x = single_pixel(2, 8, (0, 1, 1, 0.5), (1, 6, 3, 2.0))
    with torch.no_grad():
        assert float(model(x).mean()) < 0
    points = fixate(model, x, target=Dimension(0))
    assert pixel_set(points) == {(6, 3)} and channel_set(points) == {1}


class Scaled(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (2 * x).mean((2, 3)), (x / -2).mean((2, 3))


@pytest.mark.parametrize("key", [0, 1])
def test_scaling_by_a_number_keeps_the_index_and_a_negative_factor_flips_the_sign(key):
    x = single_pixel(1, 5, (0, 1, 3, 1.0), (0, 4, 0, -3.0))
    # (2x).mean < 0: explained by its most negative pixel; (x / -2).mean > 0: by its largest
    # value, 1.5 at the same pixel, which is x = -3 (sign -1) before the division.
    points = fixate(Scaled(), x, output_key=key)
    assert points.tolist() == [[0, 0, 4, 0, -1]]


# ----------------------------------------------------------------------------- linear layers


class PooledHead(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.fc = set_weight(nn.Linear(weight.shape[1], weight.shape[0]), weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


def test_linear_on_a_vector_keeps_every_positive_contribution():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 5, 5, generator=g)
    weight = torch.randn(3, 6, generator=g)
    points = fixate(PooledHead(weight), x, target=ClassLogit(2))
    a = x.mean((2, 3))
    for b in range(2):
        expected = {j for j in range(6) if float(a[b, j] * weight[2, j]) > 0}
        assert channel_set(points, b) == expected
        for c in expected:  # each channel then moves to its argmax of sign(a_c) * x_c
            s = 1.0 if a[b, c] > 0 else -1.0
            y, xx = divmod(int((s * x[b, c]).argmax()), 5)
            assert (c, y, xx) in {tuple(r[1:4]) for r in points[points[:, 0] == b].tolist()}


def test_linear_on_a_flattened_map_keeps_only_the_largest_contribution():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, 4, 4, generator=g)
    fc = nn.Linear(32, 5)
    model = nn.Sequential(nn.Flatten(), fc)
    points = fixate(model, x, target=ClassLogit(4))
    for b in range(3):
        j = int((x[b].flatten() * fc.weight[4]).argmax())
        c, rest = divmod(j, 16)
        found = {tuple(r[1:4]) for r in points[points[:, 0] == b].tolist()}
        assert found == {(c, *divmod(rest, 4))}


# ----------------------------------------------------------------------------- start sets


def test_smallest_share_of_the_energy():
    w = torch.tensor([[1.0, 4.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 5.0]])
    chosen = smallest_share(w, 0.5)
    assert chosen.tolist() == [
        [False, True, False, True],  # 4 + 3 = 7 >= 5
        [False, False, False, False],
        [True, False, False, False],  # 5 >= 5
    ]
    assert smallest_share(w, 1.0)[0].all()


def test_default_target_of_a_backbone_is_the_embedding():
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    model.fc = nn.Identity()
    x = torch.randn(1, 3, 32, 32)
    exp = fw.explain(model, x, method="fixations")
    assert exp.target == "Embedding()"
    assert torch.allclose(exp.scores, model.eval()(x).norm(dim=1), rtol=1e-4)


def test_similarity_and_dimension_targets_run():
    torch.manual_seed(2)  # a seed where image 0 has no positive term f_d * ref_d: flagged
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3))
    x = torch.rand(2, 3, 16, 16)
    ref = torch.randn(4)
    for target in (Similarity(ref), Dimension(3), Embedding()):
        exp = fw.explain(model, x, method="fixations", target=target)
        assert exp.heatmap.shape == (2, 16, 16) and exp.target == repr(target)
        if isinstance(target, Similarity):
            assert exp.degenerate_images[0] and len(exp.points[0]) == 0
        else:
            assert exp.degenerate is None and all(len(p) for p in exp.points)


def test_a_callable_target_is_refused():
    with pytest.raises(TypeError, match="cannot be traced back"):
        fw.explain(colour_net(), two_patches(), method="fixations", target=lambda out: out[:, 0])


# ----------------------------------------------------------------------------- map and points


def test_outliers_are_dropped_and_counts_blurred():
    cluster = torch.stack(torch.meshgrid(torch.arange(10, 16), torch.arange(20, 25), indexing="ij"))
    cluster = cluster.reshape(2, -1).T  # 30 pixels
    far = torch.tensor([[60, 2]])
    yx = torch.cat([cluster, far])
    keep = inliers(yx, reach=0.1 * (64**2 * 2) ** 0.5, share=0.05)
    assert keep[:30].all() and not keep[30]
    rows = torch.cat([torch.zeros(31, 1, dtype=torch.long), torch.zeros(31, 1).long(), yx], 1)
    rows = torch.cat([rows, rows[:1] + torch.tensor([[0, 1, 0, 0]])])  # (10, 20) in 2 channels
    points, counts = pixels(torch.cat([rows, torch.ones(32, 1).long()], 1), 1, (64, 64), 0.1, 0.05)
    assert points[0].shape == (30, 2) and (60, 2) not in {tuple(p) for p in points[0].tolist()}
    assert float(counts.sum()) == 31 and float(counts[0, 10, 20]) == 2
    blurred = blur(counts, 3.0)
    assert abs(float(blurred.sum()) - 31) < 0.5 and float(blurred[0, 60, 2]) == 0


def test_blur_is_a_zero_padded_gaussian_convolution():
    x = torch.rand(2, 30, 41)
    sigma, r = 3.3, 10
    t = torch.arange(-r, r + 1).float()
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    rows = F.conv2d(x[:, None], k.view(1, 1, 1, -1), padding=(0, r))
    expected = F.conv2d(rows, k.view(1, 1, -1, 1), padding=(r, 0))[:, 0]
    assert torch.allclose(blur(x, sigma), expected, atol=1e-6)
    assert torch.equal(blur(x, 0.0), x)


def test_every_fixation_lies_inside_the_image():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=4, dilation=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=3, padding_mode="reflect"),
        nn.ReLU(),
        nn.AvgPool2d(2, padding=1),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 7),
    )
    x = torch.randn(4, 3, 29, 31)
    for loc in ("center", "argmax"):
        points = fixate(model, x, loc=loc)
        assert len(points) >= 4
        assert points[:, 2].min() >= 0 and points[:, 2].max() < 29
        assert points[:, 3].min() >= 0 and points[:, 3].max() < 31
        assert set(points[:, 0].tolist()) == {0, 1, 2, 3}


def test_batch_of_six_agrees_with_single_images():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 5),
    )  # fmt: skip
    x = torch.rand(6, 3, 24, 24)
    whole = fw.explain(model, x, method="fixations", loc="argmax")
    for i in range(6):
        one = fw.explain(model, x[i : i + 1], method="fixations", loc="argmax")
        assert torch.equal(one.points[0], whole.points[i])
        assert torch.allclose(one.heatmap[0], whole.heatmap[i], atol=1e-6)


# ----------------------------------------------------------------------------- torchvision


def small_maxvit(num_classes: int) -> nn.Module:
    """maxvit_t's architecture at 64x64: partitions of 2 so that every stage divides."""
    from torchvision.models.maxvit import MaxVit

    return MaxVit(
        input_size=(64, 64), stem_channels=64, partition_size=2, block_channels=[64, 128, 256, 512],
        block_layers=[1, 1, 1, 1], head_dim=32, stochastic_depth_prob=0.0,
        num_classes=num_classes,
    )  # fmt: skip


SLOW = pytest.mark.slow
FAMILIES = [  # (torchvision builder, input size, options): the smallest member of each family
    ("resnet18", 64, {}),
    ("resnet50", 64, {}),
    pytest.param("resnext50_32x4d", 64, {}, marks=SLOW),
    pytest.param("wide_resnet50_2", 64, {}, marks=SLOW),
    ("vgg11", 64, {}),
    ("vgg16", 32, {}),
    pytest.param("densenet121", 64, {}, marks=SLOW),
    ("mobilenet_v2", 64, {}),
    ("mobilenet_v3_small", 64, {}),
    ("efficientnet_b0", 64, {}),
    pytest.param("efficientnet_v2_s", 64, {}, marks=SLOW),
    ("mnasnet0_5", 64, {}),
    ("regnet_x_400mf", 64, {}),
    ("regnet_y_400mf", 64, {}),
    ("shufflenet_v2_x0_5", 64, {}),
    ("squeezenet1_0", 64, {}),
    pytest.param("googlenet", 64, {}, marks=SLOW),
    pytest.param("inception_v3", 75, {}, marks=SLOW),
    ("alexnet", 64, {}),
    ("convnext_tiny", 64, {}),
    pytest.param("swin_t", 64, {}, marks=SLOW),
    pytest.param("swin_v2_t", 64, {}, marks=SLOW),
    pytest.param("vit_b_16", 32, {"image_size": 32}, marks=SLOW),
    pytest.param("maxvit_t", 64, {}, marks=SLOW),
]


@pytest.mark.parametrize(("name", "size", "options"), FAMILIES)
def test_torchvision_families(name, size, options):
    """Random weights, one small input: a finite, non-constant map from fixations in the image,
    the predicted class, its score equal to the model's."""
    torch.manual_seed(0)
    if name == "maxvit_t":
        model = small_maxvit(10).eval()
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=10, **options).eval()
    for m in model.modules():  # torchvision zero-initialises some heads (ViT): no contribution
        if isinstance(m, nn.Linear) and not bool(m.weight.any()):
            nn.init.normal_(m.weight, std=0.02)
    x = torch.rand(2, 3, size, size)
    exp = fw.explain(model, x, method="fixations", target=Predicted())  # squeezenet: a conv head
    with torch.no_grad():
        logits = model(x)
    assert exp.degenerate is None
    assert torch.allclose(exp.scores, logits.max(dim=1).values, rtol=1e-4, atol=1e-5)
    assert exp.heatmap.shape == (2, size, size) and bool(torch.isfinite(exp.heatmap).all())
    for b, p in enumerate(exp.points):
        assert p.dtype == torch.int64 and p.shape[1] == 2 and len(p) > 0
        assert p.min() >= 0 and p.max() < size
        assert float(exp.heatmap[b].max()) == 1.0 and float(exp.heatmap[b].min()) < 1.0
        # the heatmap peaks within one blur sigma of a fixation
        peak = torch.tensor(divmod(int(exp.heatmap[b].argmax()), size)).float()
        assert float((p.float() - peak).norm(dim=1).min()) <= 0.09 * size + 1


TIMM_FAMILIES = [  # (timm name, input size, options): random weights, the smallest member
    ("resnet18", 64, {}),
    ("efficientnet_b0", 64, {}),
    ("mobilenetv3_small_100", 64, {}),
    ("convnext_atto", 64, {}),
    ("regnety_002", 64, {}),
    ("vit_tiny_patch16_224", 64, {"img_size": 64}),
    ("deit_tiny_patch16_224", 64, {"img_size": 64}),
    ("vit_small_patch14_reg4_dinov2", 56, {"img_size": 56}),  # register tokens
    pytest.param("swin_tiny_patch4_window7_224", 112, {"img_size": 112}, marks=SLOW),
]


@pytest.mark.parametrize(("name", "size", "options"), TIMM_FAMILIES)
def test_timm_families(name, size, options):
    """timm models (the `timm` extra): fixations in the image, a finite map peaking at one of
    them, the predicted class's score equal to the model's."""
    import timm  # the timm extra is part of the test extra: never skipped

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **options).eval()
    x = torch.rand(1, 3, size, size)
    exp = fw.explain(model, x, method="fixations", target=Predicted())
    with torch.no_grad():
        logits = model(x)
    assert exp.degenerate is None
    assert torch.allclose(exp.scores, logits.max(dim=1).values, rtol=1e-4, atol=1e-5)
    assert bool(torch.isfinite(exp.heatmap).all()) and float(exp.heatmap[0].min()) < 1.0
    p = exp.points[0]
    assert len(p) > 0 and p.min() >= 0 and p.max() < size


# ----------------------------------------------------------------------------- errors and hygiene


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * torch.sigmoid(y)


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x).mean((2, 3))


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x)
        return -self.conv(x)


def test_unsupported_ops_are_named():
    x = torch.rand(1, 3, 16, 16)
    transposed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 4, 2, stride=2))
    with pytest.raises(ValueError, match=r"no rule for module '1' \(ConvTranspose2d\)"):
        fw.explain(transposed, x, method="fixations")
    with pytest.raises(ValueError, match="torch.fx could not trace Branchy"):
        fw.explain(Branchy(), x, method="fixations")


def test_options_are_checked():
    model, x = colour_net(), two_patches()
    with pytest.raises(ValueError, match="loc must be one of"):
        fw.explain(model, x, method="fixations", loc="middle")
    with pytest.raises(TypeError, match="no option"):
        fw.explain(model, x, method="fixations", layer_name="x")
    assert "fixations" in fw.methods()


def test_model_is_restored_also_after_an_error():
    model = colour_net().train()
    model[0].weight.requires_grad_(False)
    flags = [(m, m.training) for m in model.modules()]
    fw.explain(model, two_patches(), method="fixations")
    assert all(m.training == t for m, t in flags)
    assert not model[0].weight.requires_grad and model[3].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    broken = nn.Sequential(colour_net()[:4], nn.ConvTranspose2d(2, 2, 2)).train()
    with pytest.raises(ValueError):
        fw.explain(broken, two_patches(), method="fixations")
    assert all(m.training for m in broken.modules())


def test_autocast_bf16_gives_a_valid_map():
    exp = fw.explain(colour_net(), two_patches(), method="fixations", precision="bf16")
    assert exp.heatmap.dtype == torch.float32
    assert float(exp.heatmap.min()) >= 0.0 and float(exp.heatmap.max()) == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model, x = colour_net(), two_patches()
    cpu = fw.explain(model, x, method="fixations", target=ClassLogit(0))
    gpu = fw.explain(model.cuda(), x.cuda(), method="fixations", target=ClassLogit(0))
    assert gpu.heatmap.is_cuda
    assert torch.equal(cpu.points[0], gpu.points[0].cpu())
    assert torch.allclose(cpu.heatmap, gpu.heatmap.cpu(), atol=1e-5)


def test_predicted_matches_explicit_class_logit():
    model, x = colour_net(), two_patches()
    a = fw.explain(model, x, method="fixations", target=Predicted())
    b = fw.explain(model, x, method="fixations", target=ClassLogit(int(model(x).argmax())))
    assert torch.equal(a.points[0], b.points[0])
    assert F.l1_loss(a.heatmap, b.heatmap) == 0


class TwoHeads(nn.Module):
    """Returns ``{"emb": pooled features, "logits": fc(pooled)}`` with functional ops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = F.relu(self.conv(x))
        pooled = torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)
        return {"emb": pooled, "logits": self.fc(pooled)}


def test_output_key_picks_the_explained_output_and_its_default_target():
    torch.manual_seed(0)
    model, x = TwoHeads(), torch.rand(2, 3, 12, 12)
    logits = fw.explain(model, x, method="fixations", output_key="logits")
    emb = fw.explain(model, x, method="fixations", output_key="emb")
    assert (logits.target, emb.target) == ("Predicted()", "Embedding()")
    with torch.no_grad():
        out = model(x)
    assert torch.allclose(logits.scores, out["logits"].max(dim=1).values)
    assert torch.allclose(emb.scores, out["emb"].norm(dim=1))
    with pytest.raises(ValueError, match="output_key"):
        fw.explain(model, x, method="fixations", output_key="nope")


def test_flower_net_fixations_fall_on_the_petals():
    """On the shipped flower classifier, fixations land on the discriminative part.

    Measured on 60 held-out flowers (all correctly classified): 88% of the fixations lie on the
    petals, which cover 10% of the image; in every image more than half of them do (min 59%).
    """
    import famwidget as fw

    model = fw.zoo.flower_net()
    test = fw.data.flowers(60, seed=9)
    x = model.preprocess.batch(test.images)
    exp = fw.explain(model, x, method="fixations")
    with torch.no_grad():
        correct = model(x).argmax(1).numpy() == test.labels
    rates = [
        test.masks[i][p[:, 0].numpy(), p[:, 1].numpy()].mean()
        for i, p in enumerate(exp.points)
        if correct[i] and len(p)
    ]
    assert len(rates) >= 55 and test.masks.mean() < 0.15
    assert np.mean(rates) > 0.75
    assert min(rates) > 0.5  # on the petals more often than on the background, image by image


# ----------------------------------------------------------------------------- modern rules


def route(model: nn.Module, x: torch.Tensor, start: torch.Tensor) -> set[tuple[int, ...]]:
    """Walk the fixations ``start`` (rows: index into the model's output, then the sign) back
    to the input; the rows that arrive, as a set of tuples."""
    from famwidget.explainers import fixation_walk as engine
    from famwidget.explainers import fixations as fixations_module
    from famwidget.explainers.graph import signal_nodes, trace

    gm = trace(model, "test")
    active = signal_nodes(gm)
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    plan = fixations_module.plan_walk(gm, out, active)
    with torch.inference_mode():
        walk, output = fixations_module.record(gm, x, plan, active, None)
        arrived = engine.walk_back(walk, plan, out, start, output)
    return {tuple(r) for r in arrived.tolist()}


class Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_channel_shuffle_moves_each_channel_exactly():
    def shuffle(x):
        b, c, h, w = x.shape
        return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)

    x = torch.rand(1, 4, 2, 2)
    for model in (Lambda(shuffle), nn.Sequential(nn.ChannelShuffle(2))):
        for c, source in enumerate([0, 2, 1, 3]):
            assert route(model, x, torch.tensor([[0, c, 1, 0, 1]])) == {(0, source, 1, 0, 1)}


def test_split_chunk_cat_stack_and_getitem_keep_the_index():
    def parts(x):
        a, b = x.chunk(2, dim=1)
        c, d = torch.split(b, 1, dim=1)
        return torch.cat([d, a, c], dim=1)  # channels x3, x0, x1, x2

    x = torch.rand(1, 4, 3, 3)
    for c, source in enumerate([3, 0, 1, 2]):
        assert route(Lambda(parts), x, torch.tensor([[0, c, 2, 1, -1]])) == {(0, source, 2, 1, -1)}

    def stack(x):
        a, b = x.chunk(2, dim=1)
        return torch.stack([a, b], dim=1)  # (1, 2, 2, 3, 3)

    stacked = Lambda(stack)
    assert route(stacked, x, torch.tensor([[0, 1, 0, 2, 2, 1]])) == {(0, 2, 2, 2, 1)}
    sliced = Lambda(lambda x: x[:, 1:, ::2])  # (1, 3, 2, 3)
    assert route(sliced, x, torch.tensor([[0, 0, 1, 2, 1]])) == {(0, 1, 2, 2, 1)}
    padded = Lambda(lambda x: F.pad(x, (1, 1, 1, 1)))
    assert route(padded, x, torch.tensor([[0, 0, 1, 1, 1]])) == {(0, 0, 0, 0, 1)}
    assert route(padded, x, torch.tensor([[0, 0, 0, 0, 1]])) == set()  # padding: dropped


def tokens() -> torch.Tensor:
    """(1, 1, 3, 4) as (B, heads, tokens, E): token 0 attends most to token 2."""
    return torch.tensor([[[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [3.0, 0, 0, 0]]]])


@pytest.mark.parametrize("written", ["sdpa", "matmul", "einsum"])
def test_attention_follows_the_largest_weighted_value(written):
    def attend(x):
        if written == "sdpa":
            return F.scaled_dot_product_attention(x, x, 2 * x)
        if written == "matmul":
            return (x @ x.transpose(-2, -1) / 2).softmax(dim=-1) @ (2 * x)
        a = torch.einsum("bhid,bhjd->bhij", x, x).mul(0.5).softmax(dim=-1)
        return torch.einsum("bhij,bhjd->bhid", a, 2 * x)

    x = tokens()
    # a_0 = softmax([0.5, 0, 4.5] / 2 ...) peaks on token 2; v = 2x: dim 0 is largest there
    assert route(Lambda(attend), x, torch.tensor([[0, 0, 0, 0, 1]])) == {(0, 0, 2, 0, 1)}
    # dim 1 is non-zero only on token 1: the weight alone does not decide
    assert route(Lambda(attend), x, torch.tensor([[0, 0, 0, 1, 1]])) == {(0, 0, 1, 1, 1)}


def test_multihead_attention_picks_head_token_and_channel():
    mha = nn.MultiheadAttention(2, 1, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([torch.eye(2)] * 3))
        mha.in_proj_bias.zero_()
        mha.out_proj.weight.copy_(torch.eye(2))
        mha.out_proj.bias.zero_()

    class Attend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]]])
    assert route(Attend(), x, torch.tensor([[0, 0, 0, 1]])) == {(0, 2, 0, 1)}
    assert route(Attend(), x, torch.tensor([[0, 0, 1, 1]])) == {(0, 1, 1, 1)}


class SEGate(nn.Module):
    """``y * tanh(fc(mean(y)))`` with a negative gate; the signal ``y`` is a copy of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.y = set_weight(nn.Conv2d(1, 1, 1), torch.ones(1, 1, 1, 1))
        self.fc = set_weight(nn.Conv2d(1, 1, 1), -torch.ones(1, 1, 1, 1))

    def forward(self, x):
        y = self.y(x)
        return y * torch.tanh(self.fc(y.mean((2, 3), keepdim=True)))


def test_gate_follows_the_signal_with_the_sign_of_the_gate():
    x = single_pixel(1, 8, (0, 5, 5, 1.0))
    # the most negative output is at (5, 5): explained with s = -1, the gate is negative,
    # so the input pixel is reached with s = +1 (it is positive) and never the pooled gate path
    assert route(SEGate(), x, torch.tensor([[0, 0, 5, 5, -1]])) == {(0, 0, 5, 5, 1)}
    exp = fw.explain(Wrapper(), torch.rand(1, 3, 16, 16), method="fixations")  # y * sigmoid(y)
    assert len(exp.points[0]) > 0 and exp.degenerate is None


def test_norms_keep_the_index_and_a_negative_weight_flips_the_sign():
    bn = nn.BatchNorm2d(2).eval()
    ln = nn.LayerNorm(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-1.0, 2.0]))
        ln.weight.copy_(torch.tensor([1.0, -3.0]))
    x = torch.rand(1, 2, 3, 3)
    assert route(nn.Sequential(bn), x, torch.tensor([[0, 0, 1, 2, 1]])) == {(0, 0, 1, 2, -1)}
    assert route(nn.Sequential(bn), x, torch.tensor([[0, 1, 1, 2, 1]])) == {(0, 1, 1, 2, 1)}
    t = torch.rand(1, 5, 2)  # tokens: LayerNorm over channels
    assert route(nn.Sequential(ln), t, torch.tensor([[0, 3, 1, 1]])) == {(0, 3, 1, -1)}
    assert route(nn.Sequential(ln), t, torch.tensor([[0, 3, 0, 1]])) == {(0, 3, 0, 1)}


def test_smooth_activations_flip_the_sign_where_the_output_sign_differs():
    x = torch.tensor([[[[-1.0, 2.0]]]])
    for act, flips in ((nn.Sigmoid(), True), (nn.GELU(), False), (nn.ReLU(), False)):
        assert route(nn.Sequential(act), x, torch.tensor([[0, 0, 0, 0, 1]])) == {
            (0, 0, 0, 0, -1 if flips else 1)
        }
        assert route(nn.Sequential(act), x, torch.tensor([[0, 0, 0, 1, 1]])) == {(0, 0, 0, 1, 1)}


def test_scale_by_a_parameter_flips_where_it_is_negative():
    class LayerScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.tensor([-1.0, 1.0])[:, None, None])

        def forward(self, x):
            return self.gamma * x

    x = torch.rand(1, 2, 2, 2)
    assert route(LayerScale(), x, torch.tensor([[0, 0, 1, 1, 1]])) == {(0, 0, 1, 1, -1)}
    assert route(LayerScale(), x, torch.tensor([[0, 1, 1, 1, 1]])) == {(0, 1, 1, 1, 1)}


@pytest.mark.parametrize(("mode", "source"), [("nearest", (2, 1)), ("bilinear", (2, 1))])
def test_resize_goes_to_the_nearest_source_pixel(mode, source):
    x = torch.rand(1, 1, 4, 4)
    up = Lambda(lambda x: F.interpolate(x, scale_factor=2, mode=mode))
    (arrived,) = route(up, x, torch.tensor([[0, 0, 5, 3, 1]]))
    assert arrived[2:4] == source
    (arrived,) = route(nn.Sequential(nn.Upsample(size=(8, 8))), x, torch.tensor([[0, 0, 7, 0, 1]]))
    assert arrived[2:4] == (3, 0)


def test_check_supported_names_the_op_or_says_none():
    from famwidget.explainers.fixations import check_supported

    x = torch.rand(1, 3, 16, 16)
    assert check_supported(colour_net(), two_patches()) is None
    assert check_supported(SEGate(), single_pixel(1, 8, (0, 1, 1, 1.0))) is None
    transposed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 4, 2, stride=2))
    reason = check_supported(transposed, x)
    assert reason is not None and "module '1' (ConvTranspose2d)" in reason


def test_a_zero_classifier_is_flagged_not_a_silent_blank():
    model = colour_net()
    with torch.no_grad():
        model[-1].weight.zero_()
    with pytest.warns(fw.explanation.DegenerateMapWarning, match="no fixation reaches"):
        exp = fw.explain(model, two_patches(), method="fixations")
    assert exp.degenerate and float(exp.heatmap.max()) == 0.0


def test_wrapped_models_give_the_same_fixations():
    model, x = colour_net(), two_patches()
    plain = fw.explain(model, x, method="fixations")
    for wrapped in (nn.DataParallel(model), torch.compile(model)):
        other = fw.explain(wrapped, x, method="fixations")
        assert torch.equal(plain.points[0], other.points[0])
        assert torch.equal(plain.heatmap, other.heatmap)
