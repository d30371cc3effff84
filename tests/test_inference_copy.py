"""famwidget.explainers.inference_copy: the folded copy Score-FAM's masked forwards run on."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from famwidget import explain
from famwidget.explainers.inference_copy import agrees, fold, inference_copy


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm statistics and affine values far from the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    return randomise_norms(model).eval()


@pytest.mark.parametrize(
    ("bias", "groups", "affine"), [(False, 1, True), (True, 1, True), (True, 4, False)]
)
def test_fold_computes_the_norm_of_the_conv(bias, groups, affine):
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=bias, groups=groups)
    norm = randomise_norms(nn.Sequential(nn.BatchNorm2d(12, affine=affine)))[0].eval()
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        assert torch.allclose(fold(conv, norm)(x), norm(conv(x)), atol=1e-5, rtol=1e-5)


def test_the_copy_computes_what_the_model_does_and_leaves_it_alone():
    model = resnet()
    seen = []
    handle = model.layer1.register_forward_hook(lambda m, i, o: seen.append(1))
    tensors = {k: (v, v.clone()) for k, v in model.state_dict(keep_vars=True).items()}
    folded = inference_copy(model, None)
    assert folded is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())  # all 20 folded
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        seen.clear()
        got = folded(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert seen == []  # the copy has no hooks; the model keeps its own
    assert len(model.layer1._forward_hooks) == 1
    for k, v in model.state_dict(keep_vars=True).items():  # the very tensors, unchanged
        assert v is tensors[k][0] and torch.equal(v, tensors[k][1]), k
    assert model.training is False and all(p.requires_grad for p in model.parameters())
    handle.remove()


def test_the_copy_is_cached_and_rebuilt_when_a_weight_changes():
    model = resnet()
    first = inference_copy(model, None)
    assert inference_copy(model, None) is first
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model.layer4[1].conv2.weight.mul_(3)  # in place, as an optimizer step does
        expected = model(x)
        second = inference_copy(model, None)
        assert second is not first
        assert torch.allclose(second(x), expected, atol=1e-4, rtol=1e-4)
    assert inference_copy(model, torch.bfloat16) is not second  # one copy per dtype


def test_bf16_copy_stores_conv_weights_in_bf16_channels_last():
    folded = inference_copy(resnet(), torch.bfloat16)
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.dtype == torch.bfloat16 for c in convs)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


class SharedConv(nn.Module):
    """A conv whose output feeds its BatchNorm and a skip: the norm cannot be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 6, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(torch.relu(self.norm(y) + y)).mean(dim=(2, 3))


def test_a_norm_whose_conv_output_is_used_elsewhere_is_not_folded():
    model = randomise_norms(SharedConv()).eval()
    folded = inference_copy(model, None)
    assert any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


class Branchy(nn.Module):
    """A forward that branches on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())

    def forward(self, x):
        f = self.features(x)
        if f.sum() > 0:
            f = f * 2
        return f.mean(dim=(2, 3))


def test_score_fam_runs_the_model_itself_when_it_cannot_be_traced():
    torch.manual_seed(0)
    model = randomise_norms(Branchy()).eval()
    x = torch.randn(1, 3, 32, 32)
    assert inference_copy(model, None) is None
    exp = explain(model, x, "score-fam", layer="features", precision="fp32")
    ref = explain(model, x, "score-fam", layer="features", precision="fp32", fold=False)
    assert exp.options["fold"] is False
    assert torch.equal(exp.heatmap, ref.heatmap)


def test_score_fam_on_the_copy_gives_the_models_map():
    model, x = resnet(), torch.randn(1, 3, 96, 96)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    exp = explain(model, x, "score-fam", layer="layer4", precision="fp32", max_seconds=None)
    assert exp.options["fold"] is True
    # the user's model ran the clean pass, the check of the copy and the cost estimate only:
    # never a batch of masked copies
    assert len(seen) <= 4 and exp.options["forwards"] > 100
    seen.clear()
    ref = explain(model, x, "score-fam", layer="layer4", precision="fp32", fold=False,
                  max_seconds=None)  # fmt: skip
    assert ref.options["fold"] is False and len(seen) > 10
    assert torch.allclose(exp.heatmap, ref.heatmap, atol=1e-4)


def test_a_copy_that_disagrees_with_the_model_is_not_used():
    model, x = resnet(), torch.randn(1, 3, 64, 64)
    # an output-changing hook on a conv: the copy (whose modules have no hooks) computes
    # something else
    model.layer3[0].conv1.register_forward_hook(lambda m, i, o: o + 1)
    exp = explain(model, x, "score-fam", layer="layer4", precision="fp32", max_seconds=None)
    ref = explain(model, x, "score-fam", layer="layer4", precision="fp32", fold=False,
                  max_seconds=None)  # fmt: skip
    assert exp.options["fold"] is False
    assert torch.equal(exp.heatmap, ref.heatmap)


def test_agrees_compares_every_floating_output():
    a = {"f": torch.ones(2, 4), "n": torch.tensor([1, 2])}
    assert agrees(a, {"f": torch.ones(2, 4) * 1.001, "n": torch.tensor([1, 2])})
    assert not agrees(a, {"f": torch.ones(2, 4) * 1.5, "n": torch.tensor([1, 2])})
    assert not agrees(a, {"g": torch.ones(2, 4), "n": torch.tensor([1, 2])})
    assert not agrees((torch.ones(2, 3),), (torch.ones(2, 3), torch.ones(2, 3)))
    assert not agrees(torch.ones(2, 3), [torch.ones(2, 3)])


def test_fold_must_be_a_bool_or_none():
    model, x = resnet(), torch.randn(1, 3, 64, 64)
    with pytest.raises(TypeError, match="fold must be None"):
        explain(model, x, "score-fam", layer="layer4", fold="yes")


class Uncopyable(nn.Module):
    """A module holding something ``copy.deepcopy`` refuses (a lock)."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.features[2].lock = threading.Lock()

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


def test_a_model_that_cannot_be_copied_runs_itself():
    torch.manual_seed(0)
    model, x = randomise_norms(Uncopyable()).eval(), torch.randn(1, 3, 16, 16)
    assert inference_copy(model, None) is None
    exp = explain(model, x, "score-fam", layer="features", precision="fp32")
    assert exp.options["fold"] is False
