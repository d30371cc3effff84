"""The FAM and CAM methods on every family of torchvision classifiers and the timm families.

Random weights at small inputs (no weights can be downloaded). For every model: Grad-FAM,
Grad-CAM, Score-FAM and Score-CAM give a finite map that is not constant, or one flagged
``degenerate`` with its reason; Grad-FAM and Grad-CAM equal a hand-written autograd reference on
the same layer (on the token grid for transformers) to r > 0.9999; the default layer of a
transformer is a block output, never the patch embedding nor attention internals.
Score-FAM/Score-CAM score each image's 8 strongest channels (``max_channels=8``) to stay fast.
"""

from __future__ import annotations

import time
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tv
from torch import nn

import famwidget as fw
from famwidget.explanation import DegenerateMapWarning
from famwidget.layout import attention_internal


def _timm(name: str, **kw):
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kw)

    return build


def _tv(name: str, **kw):
    return lambda: getattr(tv, name)(weights=None, num_classes=10, **kw)


SLOW = pytest.mark.slow
CASES = [
    # (id, builder, input size, marks)
    ("tv-resnet18", _tv("resnet18"), 64, ()),
    ("tv-resnext50_32x4d", _tv("resnext50_32x4d"), 64, (SLOW,)),
    ("tv-wide_resnet50_2", _tv("wide_resnet50_2"), 64, (SLOW,)),
    ("tv-vgg11", _tv("vgg11"), 64, (SLOW,)),
    ("tv-densenet121", _tv("densenet121"), 64, ()),
    ("tv-mobilenet_v2", _tv("mobilenet_v2"), 64, ()),
    ("tv-mobilenet_v3_small", _tv("mobilenet_v3_small"), 64, ()),
    ("tv-efficientnet_b0", _tv("efficientnet_b0"), 64, ()),
    ("tv-efficientnet_v2_s", _tv("efficientnet_v2_s"), 64, (SLOW,)),
    ("tv-mnasnet0_5", _tv("mnasnet0_5"), 64, ()),
    ("tv-regnet_x_400mf", _tv("regnet_x_400mf"), 64, ()),
    ("tv-regnet_y_400mf", _tv("regnet_y_400mf"), 64, ()),
    ("tv-shufflenet_v2_x0_5", _tv("shufflenet_v2_x0_5"), 64, ()),
    ("tv-squeezenet1_0", _tv("squeezenet1_0"), 64, ()),
    ("tv-googlenet", _tv("googlenet", aux_logits=False, init_weights=True), 64, ()),
    ("tv-inception_v3", _tv("inception_v3", aux_logits=False, init_weights=True), 80, (SLOW,)),
    ("tv-alexnet", _tv("alexnet"), 64, ()),
    ("tv-convnext_tiny", _tv("convnext_tiny"), 64, (SLOW,)),
    ("tv-swin_t", _tv("swin_t"), 64, (SLOW,)),
    ("tv-swin_v2_t", _tv("swin_v2_t"), 64, (SLOW,)),
    ("tv-vit_b_16", _tv("vit_b_16", image_size=64), 64, (SLOW,)),
    ("tv-maxvit_t", _tv("maxvit_t"), 224, (SLOW,)),
    ("timm-resnet18", _timm("resnet18"), 64, ()),
    ("timm-efficientnet_b0", _timm("efficientnet_b0"), 64, ()),
    ("timm-mobilenetv3_small_050", _timm("mobilenetv3_small_050"), 64, ()),
    ("timm-convnext_atto", _timm("convnext_atto"), 64, ()),
    ("timm-regnetx_002", _timm("regnetx_002"), 64, ()),
    ("timm-vit_tiny", _timm("vit_tiny_patch16_224", img_size=64), 64, ()),
    ("timm-deit_tiny", _timm("deit_tiny_patch16_224", img_size=64), 64, ()),
    ("timm-vit_reg4_dinov2", _timm("vit_small_patch14_reg4_dinov2", img_size=56), 56, (SLOW,)),
    (
        "timm-swin_tiny",
        _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=4),
        64,
        (SLOW,),
    ),
]
METHODS = ("grad-fam", "grad-cam", "score-fam", "score-cam")


def randomise_zero_heads(model: nn.Module) -> None:
    """torchvision's ViT starts its head at zero: every logit 0, nothing to explain."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and not m.weight.any():
                m.weight.normal_(0, 0.02)


def reference(model: nn.Module, x: torch.Tensor, exp: fw.Explanation) -> torch.Tensor:
    """Hand-written Grad-CAM/Grad-FAM at ``exp.layer``: hook, autograd, reshape, weigh, ReLU."""
    layer = model.get_submodule(exp.layer)
    kept = {}

    def hook(m, i, o):
        out = o[0] if isinstance(o, (tuple, list)) else o
        kept["out"] = out
        return None if out is not o else out.clone()  # later in-place ops keep our copy intact

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x.clone().requires_grad_(True))
            if exp.method == "grad-fam":
                score = logits.norm(dim=1).sum()
            else:
                score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            (grad,) = torch.autograd.grad(score, kept["out"])
    finally:
        handle.remove()
    h, w = exp.options["grid"]

    def maps(t: torch.Tensor) -> torch.Tensor:
        if exp.layout == "nhwc":
            return t.permute(0, 3, 1, 2)
        if exp.layout == "tokens":
            p = exp.options["prefix_tokens"]
            return t[:, p:].reshape(len(t), h, w, t.shape[-1]).permute(0, 3, 1, 2)
        return t

    acts, grads = maps(kept["out"]).detach(), maps(grad)
    cam = torch.relu((grads.mean(dim=(2, 3))[:, :, None, None] * acts).sum(1))
    return F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear")[:, 0]


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


@pytest.mark.parametrize(
    ("builder", "size"), [pytest.param(b, s, id=i, marks=m) for i, b, s, m in CASES]
)
def test_fam_and_cam_methods(builder, size, one_thread):
    torch.manual_seed(0)
    model = builder().eval()
    randomise_zero_heads(model)
    x = torch.randn(1, 3, size, size)
    start = time.perf_counter()
    default = fw.explain(model, x, method="grad-fam").layer
    assert attention_internal(model, default) is None
    assert "patch_embed" not in default and "conv_proj" not in default
    for method in METHODS:
        score = {"max_channels": 8, "precision": "fp32", "max_seconds": None}  # 8 channels: cheap
        options = score if method.startswith("score") else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateMapWarning)
            exp = fw.explain(model, x, method=method, **options)
        assert exp.layer == default and exp.layout in ("nchw", "nhwc", "tokens")
        assert torch.isfinite(exp.heatmap).all()
        constant = float(exp.heatmap.amax() - exp.heatmap.amin()) == 0
        assert not constant or exp.degenerate, f"{method}: a constant map with no reason"
        if method.startswith("grad") and not exp.degenerate:
            ref = reference(model, x, exp)
            assert corr(exp.heatmap, ref) > 0.9999, method
    print(f"{default} ({exp.layout}): {time.perf_counter() - start:.2f} s")
