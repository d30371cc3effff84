"""The tap and `preserved`: a model comes back exactly as it went in, also after an exception."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import famwidget as fw
from famwidget.tap import Tap, preserved, resolve_layer, spatial_layers


class Exploding(nn.Module):
    """Passes through, or raises when armed: a forward pass that fails half way."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("boom")
        return x


def snapshot(model: nn.Module) -> dict:
    return {
        "training": [m.training for m in model.modules()],
        "forward_hooks": [dict(m._forward_hooks) for m in model.modules()],
        "backward_hooks": [dict(m._backward_hooks) for m in model.modules()],
        "pre_hooks": [dict(m._forward_pre_hooks) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
    }


def assert_same(before: dict, after: dict) -> None:
    assert after["training"] == before["training"]
    assert after["forward_hooks"] == before["forward_hooks"]
    assert after["backward_hooks"] == before["backward_hooks"]
    assert after["pre_hooks"] == before["pre_hooks"]
    assert after["requires_grad"] == before["requires_grad"]
    for g0, g1 in zip(before["grads"], after["grads"], strict=True):
        assert g1 is g0  # the very same tensor (or None), never a new .grad
    for p0, p1 in zip(before["params"], after["params"], strict=True):
        assert torch.equal(p0, p1)


@pytest.fixture
def user_model(tiny_embedding) -> nn.Module:
    """A model as a user might hand it over: training mode, own hook, frozen part, stale grad."""
    model = nn.Sequential(tiny_embedding.body, Exploding(), nn.Flatten(), nn.LazyLinear(4))
    model(torch.rand(1, 3, 16, 16))  # materialise the lazy layer
    model.train()
    model[0][0].weight.requires_grad_(False)
    model[3].weight.grad = torch.ones_like(model[3].weight)
    calls = []
    model[0][2].register_forward_hook(lambda m, i, o: calls.append(1))
    model.calls = calls
    return model


@pytest.mark.parametrize("method", ["grad-fam", "grad-cam"])
def test_explain_leaves_model_as_found(user_model, images, method):
    before = snapshot(user_model)
    exp = fw.explain(user_model, images, method=method, layer="0.4")
    assert exp.heatmap.shape == (5, 16, 16)
    assert_same(before, snapshot(user_model))
    assert user_model.calls, "the user's own hook still runs"


def test_model_restored_when_forward_raises(user_model, images):
    user_model[1].armed = True
    before = snapshot(user_model)
    with pytest.raises(RuntimeError, match="boom"):
        fw.explain(user_model, images, layer="0.4")
    assert_same(before, snapshot(user_model))


def test_preserved_restores_after_exception_in_body(tiny_embedding):
    tiny_embedding.train()
    p = next(tiny_embedding.parameters())
    with pytest.raises(ValueError), preserved(tiny_embedding):
        assert not tiny_embedding.training
        p.requires_grad_(False)
        p.grad = torch.zeros_like(p)
        raise ValueError
    assert tiny_embedding.training and p.requires_grad and p.grad is None


def test_tap_keeps_output_and_removes_hook(tiny_embedding, images):
    layer = tiny_embedding.body[3]
    with Tap(layer) as tap:
        out = tiny_embedding(images)
    assert len(layer._forward_hooks) == 0
    expected = tiny_embedding.body[:4](images)
    assert torch.allclose(tap.output, expected)
    assert out.shape == (5, 6)


def test_tap_output_survives_inplace_ops_downstream():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(inplace=True))
    x = torch.randn(1, 1, 4, 4) * 10
    with Tap(model[0]) as tap:
        model(x)
    assert (tap.output < 0).any(), "in-place ReLU must not rewrite the kept activations"


def test_resolve_layer_default_is_last_spatial(tiny_embedding, images):
    assert spatial_layers(tiny_embedding, images[:1])[-1] == "body"
    name, module = resolve_layer(tiny_embedding, None, images[:1])
    assert name == "body" and module is tiny_embedding.body
    assert resolve_layer(tiny_embedding, tiny_embedding.body[3]) == (
        "body.3",
        tiny_embedding.body[3],
    )


def test_wrong_layer_name_suggests_the_closest(images):
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match=r"did you mean 'layer4'\?\); valid names: 'layer4'"):
        fw.explain(model, images, layer="layer_4")


def test_fixations_take_no_layer(tiny_embedding, images):
    with pytest.raises(ValueError, match="takes no layer="):
        fw.explain(tiny_embedding, images, method="fixations", layer="body")


def test_detached_target_is_a_clear_error(tiny_embedding, images):
    with pytest.raises(ValueError, match="differentiable"):
        fw.explain(tiny_embedding, images, target=lambda out: out.detach().sum(1))
    assert all(len(m._forward_hooks) == 0 for m in tiny_embedding.modules())


def test_wrong_layer_name_lists_valid_ones(tiny_embedding, images):
    with pytest.raises(ValueError, match=r"'body\.3'.*'head'|valid names: .*'body\.3'"):
        fw.explain(tiny_embedding, images, layer="nope")
    with pytest.raises(ValueError, match="not inside the model"):
        fw.explain(tiny_embedding, images, layer=nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="module name"):
        fw.explain(tiny_embedding, images, layer=3)


def test_layer_without_4d_output_is_refused(tiny_embedding, images):
    with pytest.raises(ValueError, match="4-D"):
        fw.explain(tiny_embedding, images, layer="head")
    assert all(len(m._forward_hooks) == 0 for m in tiny_embedding.modules())


def test_tap_reads_a_token_layer_through_its_reader():
    from famwidget.layout import Reader

    model = nn.Sequential(nn.Identity())
    reader = Reader(model, "0", model[0], (8, 8), batch=2)
    tokens = torch.randn(2, 1 + 4, 3)  # a class token, then a 2x2 grid (the prefix is inferred)
    with Tap(model[0], reader) as tap:
        model(tokens)
    assert tap.layout.kind == "tokens" and tap.layout.prefix == 1
    assert torch.equal(tap.maps()[1, :, 1, 0], tokens[1, 1 + 2])
    with pytest.raises(ValueError, match="first axis is not the batch"), Tap(model[0], reader):
        model(torch.randn(3, 5, 3))
    assert len(model[0]._forward_hooks) == 0


def test_wrapper_prefixes_are_stripped(tiny_embedding):
    from famwidget.tap import strip_wrapper_prefix

    wrapped = nn.DataParallel(tiny_embedding)
    assert strip_wrapper_prefix(wrapped, tiny_embedding, "module.body.3") == "body.3"
    assert strip_wrapper_prefix(wrapped, tiny_embedding, "body.3") == "body.3"
    assert strip_wrapper_prefix(wrapped, tiny_embedding, "module.nope") == "module.nope"
