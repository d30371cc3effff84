"""famwidget.inputs: bad images, gradients switched off, class targets on models with no classes.

Each refusal is checked for its message: what was wrong and what is accepted. After every error
the model is bit-identical (state_dict, hooks, training flags, requires_grad, .grad).
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import famwidget as fw
from famwidget.inputs import check_gradients, first_conv, has_classes, prepare_images


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "training": [m.training for m in model.modules()],
        "flags": [(p.requires_grad, p.grad) for p in model.parameters()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    assert after["hooks"] == before["hooks"] and after["training"] == before["training"]
    assert all(
        a[0] == b[0] and a[1] is b[1] for a, b in zip(after["flags"], before["flags"], strict=True)
    )


@pytest.mark.parametrize(
    "value, kind", [(float("nan"), "1 NaN, 0 Inf"), (float("inf"), "0 NaN, 1 Inf")]
)
def test_a_single_non_finite_pixel_is_refused_with_where_it_is(tiny_embedding, images, value, kind):
    bad = images.clone()
    bad[3, 1, 5, 7] = value
    before = snapshot(tiny_embedding)
    for method in ("grad-fam", "score-fam"):
        with pytest.raises(ValueError) as err:
            fw.explain(tiny_embedding, bad, method)
        text = str(err.value)
        assert f"1 non-finite value(s) ({kind}) in 1 of 5 image(s)" in text
        assert "image 3, channel 1, pixel (y=5, x=7)" in text
        assert "torch.nan_to_num" in text  # what to do about it
    assert_unchanged(tiny_embedding, before)


def test_many_non_finite_values_are_counted(tiny_embedding, images):
    bad = images.clone()
    bad[1, :, :2, :2] = float("nan")
    bad[4, 0, 0, 0] = -float("inf")
    with pytest.raises(ValueError, match=r"13 non-finite value\(s\) \(12 NaN, 1 Inf\) in 2 of 5"):
        prepare_images(bad, tiny_embedding)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_converted_to_the_models(tiny_embedding, images, dtype):
    converted = prepare_images(images.to(dtype), tiny_embedding)
    assert converted.dtype == torch.float32
    exp = fw.explain(tiny_embedding, images.to(dtype))
    reference = fw.explain(tiny_embedding, images.to(dtype).float())
    assert torch.allclose(exp.heatmap, reference.heatmap)


def test_images_follow_a_float64_model(tiny_embedding, images):
    model = tiny_embedding.double()
    assert prepare_images(images, model).dtype == torch.float64
    assert fw.explain(model, images).heatmap.shape == (5, 16, 16)


def test_integer_images_are_refused_as_before(tiny_embedding):
    with pytest.raises(
        TypeError, match=r"floating tensor .* got torch.uint8; .*images.float\(\) / 255"
    ):
        fw.explain(tiny_embedding, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_meta_images_and_meta_models_are_refused(tiny_embedding, images):
    with pytest.raises(ValueError, match="images are on the meta device .* create or load them"):
        fw.explain(tiny_embedding, images.to("meta"))
    with torch.device("meta"):
        empty = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"model's parameters are on the meta device .*to_empty"):
        fw.explain(empty, images)


def test_images_are_moved_to_the_models_device(tiny_embedding, images):
    moved = prepare_images(images, tiny_embedding)
    assert moved.device == next(tiny_embedding.parameters()).device


@pytest.mark.parametrize("channels", [1, 4])
def test_wrong_channel_counts_are_named_before_the_forward(tiny_embedding, channels):
    before = snapshot(tiny_embedding)
    x = torch.rand(2, channels, 16, 16)
    for method in ("grad-fam", "score-cam", "fixations"):
        with pytest.raises(ValueError) as err:
            fw.explain(tiny_embedding, x, method)
        text = str(err.value)
        assert f"images have {channels} channels" in text
        assert "first convolution 'body.0' takes in_channels=3" in text
        assert "(B,3,H,W)" in text
    assert_unchanged(tiny_embedding, before)


class Gray2RGB(nn.Module):
    """A model that turns 1-channel input into 3 channels itself, with a 1-channel side conv
    registered first: the channel check must follow what runs, not what is registered."""

    def __init__(self) -> None:
        super().__init__()
        self.side = nn.Conv2d(1, 2, 1)  # registered first, never on the path of the input
        self.stem = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        return self.stem(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).mean(dim=(2, 3))


def test_a_model_that_converts_channels_itself_is_not_refused():
    model = Gray2RGB()
    assert first_conv(model)[0] == "side"
    exp = fw.explain(model, torch.rand(2, 1, 12, 12), layer="stem")
    assert exp.heatmap.shape == (2, 12, 12)
    with pytest.raises(ValueError, match="first convolution 'stem' takes in_channels=3"):
        fw.explain(model, torch.rand(2, 4, 12, 12), layer="stem")


def test_vit_patch_embedding_is_the_first_conv():
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8
    )
    assert first_conv(vit)[0] == "conv_proj"


def test_grad_methods_inside_inference_mode_say_gradients_are_off(tiny_embedding, images):
    before = snapshot(tiny_embedding)
    for method in ("grad-fam", "grad-cam"):
        with torch.inference_mode(), pytest.raises(ValueError) as err:
            fw.explain(tiny_embedding, images, method)
        text = str(err.value)
        assert "gradients are switched off around the call: torch.inference_mode()" in text
        assert "score-fam" in text and "fixations" in text
    assert_unchanged(tiny_embedding, before)
    with torch.inference_mode():  # score-fam needs no gradients: it works there
        assert fw.explain(tiny_embedding, images, "score-fam").heatmap.shape == (5, 16, 16)
    check_gradients("grad-fam")  # outside: nothing to say


def test_grad_fam_inside_no_grad_switches_gradients_on_itself(tiny_embedding, images):
    reference = fw.explain(tiny_embedding, images)
    with torch.no_grad():
        inside = fw.explain(tiny_embedding, images)
    assert torch.equal(inside.heatmap, reference.heatmap)
    assert torch.is_grad_enabled()  # the mode outside the no_grad block is untouched


@pytest.mark.parametrize("name", ["ssl_net", "reid_net"])
@pytest.mark.parametrize("method", ["grad-cam", "score-cam"])
def test_class_targets_on_models_with_no_classes_are_refused(name, method):
    model = getattr(fw.zoo, name)()
    x = torch.rand(1, 3, 112, 112) if name == "ssl_net" else torch.rand(1, 3, 128, 64)
    before = snapshot(model)
    with pytest.raises(ValueError) as err:
        fw.explain(model, x, method)
    text = str(err.value)
    assert "Predicted() explains a class logit, but this model has no classes" in text
    assert "Embedding()" in text and "model.num_classes" in text
    assert ("'grad-fam'" if method == "grad-cam" else "'score-fam'") in text
    with pytest.raises(ValueError, match="has no classes"):
        fw.explain(model, x, method, target=fw.targets.ClassLogit(0))
    assert_unchanged(model, before)


def test_classifiers_keep_their_class_targets():
    flower = fw.zoo.flower_net()
    assert fw.explain(flower, torch.rand(1, 3, 112, 112), "grad-cam").target == "Predicted()"
    resnet = torchvision.models.resnet18(weights=None, num_classes=4)
    squeeze = torchvision.models.squeezenet1_1(weights=None, num_classes=4)  # ends in a pool
    assert has_classes(resnet) and has_classes(squeeze)
    exp = fw.explain(squeeze, torch.rand(1, 3, 64, 64), "grad-cam")
    assert exp.heatmap.shape == (1, 64, 64)
    resnet.fc = nn.Identity()  # the usual way to get a feature extractor: no classes left
    assert not has_classes(resnet)
    ssl = fw.zoo.ssl_net()
    ssl.num_classes = 128  # the documented override: "my output dimensions are classes"
    assert fw.explain(ssl, torch.rand(1, 3, 112, 112), "grad-cam").target == "Predicted()"


def test_sparse_and_empty_images_are_refused(tiny_embedding, images):
    with pytest.raises(TypeError, match=r"dense tensor, got layout torch.sparse_coo; .*to_dense"):
        fw.explain(tiny_embedding, images.to_sparse())
    with pytest.raises(ValueError, match=r"empty dimension, shape \(1, 3, 16, 0\); .*H, W >= 1"):
        fw.explain(tiny_embedding, torch.rand(1, 3, 16, 0))
    with pytest.raises(ValueError, match=r"empty batch \(B=0\)"):
        fw.explain(tiny_embedding, torch.rand(0, 3, 16, 16))
