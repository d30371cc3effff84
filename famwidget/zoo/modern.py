"""Modern architectures of the zoo: a squeeze-excitation MBConv CNN and small vision transformers.

Both are small enough to train on a CPU in minutes and to explain interactively; their parts are
named as the explainers expect (``features`` for the CNN's last spatial layer; ``blocks.i``,
``cls_token`` and ``patch_embed.patch_size`` for the transformer, as in timm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SqueezeExcite(nn.Module):
    """SE gate: ``x * sigmoid(W2 silu(W1 mean_hw(x)))`` on ``(B,C,h,w)`` (Hu et al.)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2/EfficientNet): 1x1 expand → BN → SiLU → 3x3 depthwise
    (stride) → BN → SiLU → SE → 1x1 project → BN, plus the input when the shape is unchanged.

    ``(B,c_in,h,w)`` → ``(B,c_out,h/stride,w/stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.SiLU(),
        )
        self.se = SqueezeExcite(mid, max(4, c_in // 4))
        self.project = nn.Sequential(nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return out + x if self.residual else out


class SEFlowerNet(nn.Module):
    """Squeeze-excitation CNN for ``fw.data.flowers``: ``(B,3,64,64)`` → logits ``(B,C)``.

    Stem (3x3 conv stride 2, BN, SiLU; 32x32, 16 channels), four MBConv stages with SE gates
    (24 ch at 16x16, 48 at 8x8, 64 and 96 at 8x8); ``features`` ends at 8x8 with 96 channels after a
    1x1 conv, BN and SiLU; global average pool; linear head.
    """

    def __init__(self, n_classes: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU()),
            MBConv(16, 24, 2, expand=2),  # 16x16
            MBConv(24, 48, 2),  # 8x8
            MBConv(48, 64, 1),
            MBConv(64, 64, 1),
            nn.Sequential(nn.Conv2d(64, 96, 1, bias=False), nn.BatchNorm2d(96), nn.SiLU()),
        )
        self.head = nn.Linear(96, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class PatchEmbed(nn.Module):
    """``(B,3,H,W)`` → patch tokens ``(B,(H/p)(W/p),D)`` by a stride-``p`` conv (row-major grid)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvPatchEmbed(nn.Module):
    """A convolutional stem as patch embedding (Xiao et al. 2021, "Early convolutions help
    transformers see better"): three 3x3 stride-2 convs (BN, GELU) then a 1x1 conv to ``dim``;
    ``(B,3,H,W)`` → tokens ``(B,(H/8)(W/8),D)``, one per 8x8 patch (row-major grid)."""

    def __init__(self, dim: int, width: int = 24) -> None:
        super().__init__()
        self.patch_size = 8
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.GELU(),
            ]
            c_in = c_out
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention on ``(B,N,D)`` (timm layout: one ``qkv`` linear, ``proj``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` (GELU MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTFlowerNet(nn.Module):
    """Small vision transformer for ``fw.data.flowers``: ``(B,3,64,64)`` → logits ``(B,C)``.

    Patch 8 (an 8x8 grid of 64 patch tokens) plus one class token, learned position
    embeddings, ``depth`` pre-norm blocks (``blocks.i`` output ``(B,65,D)``), a final LayerNorm;
    the head reads the class token.
    """

    def __init__(
        self, n_classes: int = 6, dim: int = 96, depth: int = 4, heads: int = 3, image: int = 64
    ) -> None:
        super().__init__()
        patch = 8
        self.patch_embed = PatchEmbed(patch, dim)
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


class ViTReIDNet(nn.Module):
    """Small vision transformer re-identification net for ``fw.data.persons``.

    ``(B,3,H,W)`` (``image``) → embedding ``(B,D)``. One token per 8x8 patch (``stem="conv"``:
    a convolutional stem, :class:`ConvPatchEmbed`; ``"patch"``: one stride-8 conv), plus a class
    token when ``pool="cls"``, learned position embeddings, ``depth`` pre-norm blocks
    (``blocks.i``), a final LayerNorm; the feature is the class token (``"cls"``) or the mean of
    the patch tokens (``"mean"``), through a BatchNorm "neck" (``embedding``, as in
    :class:`~famwidget.zoo.nets.ReIDNet`); compared by cosine similarity.
    """

    def __init__(
        self,
        dim: int = 96,
        depth: int = 4,
        heads: int = 3,
        image: tuple[int, int] = (128, 64),
        stem: str = "patch",
        pool: str = "cls",
    ) -> None:
        super().__init__()
        if stem not in ("patch", "conv") or pool not in ("cls", "mean"):
            raise ValueError(
                f"stem must be 'patch' or 'conv', pool 'cls' or 'mean'; got {stem}, {pool}"
            )
        patch = 8
        self.patch_embed = PatchEmbed(patch, dim) if stem == "patch" else ConvPatchEmbed(dim)
        self.pool = pool
        self.num_prefix_tokens = 1 if pool == "cls" else 0
        if pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        n_patches = (image[0] // patch) * (image[1] // patch)
        self.pos_embed = nn.Parameter(
            torch.randn(1, n_patches + self.num_prefix_tokens, dim) * 0.02
        )
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.embedding = nn.BatchNorm1d(dim)

    def pooled(self, x: Tensor) -> Tensor:
        """The normalised feature ``(B,D)`` before the neck (what the triplet loss sees)."""
        tokens = self.patch_embed(x)
        if self.pool == "cls":
            cls = self.cls_token.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens], dim=1)
        tokens = self.norm(self.blocks(tokens + self.pos_embed))
        return tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.embedding(self.pooled(x))


__all__ = ["ConvPatchEmbed", "MBConv", "SEFlowerNet", "SqueezeExcite", "ViTFlowerNet", "ViTReIDNet"]
