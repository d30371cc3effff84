"""Layouts: token grids with class and register tokens, channels-last stages, ambiguous shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import famwidget as fw
from famwidget.layout import Layout, LayoutError, read_layout
from famwidget.tap import spatial_layers


class Attention(nn.Module):
    """Single-head self-attention with a called qkv projection (so its output can be hooked)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = (q @ k.transpose(1, 2) / q.shape[-1] ** 0.5).softmax(dim=-1)
        return self.proj(a @ v)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU())
        self.fc = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc(self.mlp(self.norm2(x)))


class TinyViT(nn.Module):
    """Patch embedding (4x4), a class token, ``registers`` register tokens, 3 blocks, a head."""

    def __init__(self, registers: int = 0, dim: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.reg_token = nn.Parameter(torch.randn(1, registers, dim)) if registers else None
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(3)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        prefix = [self.cls_token.expand(len(x), -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(len(x), -1, -1))
        t = self.blocks(torch.cat([*prefix, t], dim=1))
        return self.head(self.norm(t)[:, 0])


def reference_grad_cam(model, x, layer, prefix, grid):
    """A hand-written Grad-CAM on the token grid (the common ViT reshape transform)."""
    kept = {}
    handle = layer.register_forward_hook(lambda m, i, o: kept.update(out=o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    (grad,) = torch.autograd.grad(score, kept["out"])

    def to_maps(t):
        return t[:, prefix:].reshape(len(x), *grid, t.shape[-1]).permute(0, 3, 1, 2)

    acts, grads = to_maps(kept["out"]).detach(), to_maps(grad)
    cam = torch.relu((grads.mean(dim=(2, 3))[:, :, None, None] * acts).sum(1))
    cam = torch.nn.functional.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear")[:, 0]
    lo, hi = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
    return (cam - lo) / (hi - lo)


def test_token_grid_with_a_class_token():
    model = TinyViT()
    layout = read_layout((2, 1 + 16, 16), (16, 16), model=model)
    assert layout == Layout("tokens", (4, 4), 16, prefix=1)
    t = torch.randn(2, 17, 16)
    maps = layout.to_maps(t)
    assert maps.shape == (2, 16, 4, 4)
    assert torch.equal(maps[1, :, 2, 3], t[1, 1 + 2 * 4 + 3])  # row-major patches after the class


def test_token_grid_with_register_tokens_and_timm_prefix_count():
    model = TinyViT(registers=4)
    assert read_layout((1, 5 + 64, 16), (32, 32), model=model).prefix == 5
    declared = nn.Module()
    declared.num_prefix_tokens = 3  # what timm models say of themselves
    assert read_layout((1, 3 + 16, 8), (16, 16), model=declared) == Layout("tokens", (4, 4), 8, 3)


def test_token_prefix_inferred_when_the_model_does_not_say():
    assert read_layout((1, 50, 8), (112, 112)) == Layout("tokens", (7, 7), 8, 1)
    patched = nn.Module()
    patched.patch_size = 16  # a torchvision ViT says its patch size, not its prefix
    found = read_layout((1, 2 + 4 * 8, 8), (64, 128), model=patched)
    assert (found.prefix, found.grid) == (2, (4, 8))  # 6 + 4x7 (patch 19, padded) also fits


def test_ambiguous_tokens_name_the_grid_option():
    with pytest.raises(LayoutError, match=r'layout="tokens" and grid=\(h, w\)'):
        read_layout((1, 17, 8), (64, 64))  # 1 + 4x4 or 8 + 3x3
    assert read_layout((1, 17, 8), (64, 64), grid=(3, 3)).prefix == 8
    with pytest.raises(LayoutError, match="aspect ratio"):
        read_layout((1, 45, 8), (64, 64))  # no square grid in 37..45 tokens


def test_channels_last_stage():
    layout = read_layout((2, 4, 4, 96), (64, 64))
    assert layout == Layout("nhwc", (4, 4), 96)
    t = torch.randn(2, 4, 4, 96)
    assert torch.equal(layout.to_maps(t)[1, 7, 2, 1], t[1, 2, 1, 7])
    assert read_layout((2, 96, 4, 4), (64, 64)).kind == "nchw"


def test_ambiguous_4d_errors_or_follows_the_module_type():
    with pytest.raises(LayoutError, match='layout="nchw" .* "nhwc"'):
        read_layout((1, 8, 8, 8), (16, 16))
    assert read_layout((1, 8, 8, 8), (16, 16), module=nn.Conv2d(3, 8, 3)).kind == "nchw"
    assert read_layout((1, 8, 8, 8), (16, 16), module=nn.Linear(8, 8)).kind == "nhwc"
    relu_after_conv = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
    assert read_layout((1, 8, 8, 8), (16, 16), module=relu_after_conv).kind == "nchw"
    assert read_layout((1, 8, 8, 8), (16, 16), layout="nhwc").kind == "nhwc"
    with pytest.raises(LayoutError, match="layout must be"):
        read_layout((1, 8, 8, 8), (16, 16), layout="hwc")


def test_one_by_one_and_vectors_are_refused():
    with pytest.raises(LayoutError, match="1x1 spatial output"):
        read_layout((1, 512, 1, 1), (64, 64))
    with pytest.raises(LayoutError, match="not a map"):
        read_layout((1, 512), (64, 64))


def test_explain_on_a_token_layer_equals_the_hand_written_reference():
    torch.manual_seed(0)
    model = TinyViT(registers=2).eval()
    x = torch.randn(2, 3, 16, 16)
    exp = fw.explain(model, x, method="grad-cam")
    assert exp.layer == "blocks.1"  # with prefix tokens: the last block's input (see layout.py)
    assert exp.layout == "tokens" and exp.options["prefix_tokens"] == 3
    assert exp.activations.shape == (2, 16, 4, 4)
    ref = reference_grad_cam(model, x, model.blocks[1], 3, (4, 4))
    r = torch.corrcoef(torch.stack([exp.heatmap.flatten(), ref.flatten()]))[0, 1]
    assert r > 0.9999
    fam = fw.explain(model, x, method="score-fam", layer="blocks.2")
    assert fam.layout == "tokens" and torch.isfinite(fam.heatmap).all()
    assert fam.heatmap.std() > 0 or fam.degenerate


def test_attention_internals_are_refused_and_not_offered():
    model = TinyViT().eval()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="inside the attention module 'blocks.2.attn'"):
        fw.explain(model, x, layer="blocks.2.attn.qkv")
    names = spatial_layers(model, x)
    assert "blocks.2" in names and "blocks.2.attn" in names
    assert not any(".attn." in n for n in names)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


class Scale(nn.Module):
    """A learned per-position scale: its type says nothing of the channel axis."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.ones(8, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.s


def test_explain_layout_option_and_recorded_layout():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), Scale(), nn.Flatten(1), nn.Linear(512, 3))
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match='layout="nchw"'):
        fw.explain(model, x, layer="1", method="grad-cam")  # (1, 8, 8, 8) at 16x16: ambiguous
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    exp = fw.explain(model, x, layer="0", method="grad-cam")  # a Conv2d says channels first
    assert exp.layout == "nchw"
    assert fw.explain(model, x, layer="1", layout="nchw", method="grad-cam").layout == "nchw"
    with pytest.raises(ValueError, match="layout must be"):
        fw.explain(model, x, layer="1", layout="NCHW")
