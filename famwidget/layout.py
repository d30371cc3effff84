"""How an explained layer's output is laid out, and its conversion to channel maps ``(B,K,h,w)``.

The FAM and CAM methods combine channel maps ``A_k`` on a spatial grid. Layers hand them over in
one of three layouts:

- ``"nchw"``: ``(B,C,h,w)``, every CNN;
- ``"nhwc"``: channels last ``(B,h,w,C)``, Swin stages and the inside of ConvNeXt blocks;
- ``"tokens"``: a token sequence ``(B,N,C)`` whose first ``prefix`` tokens are a class token,
  distillation or register tokens and whose other ``N - prefix = gh*gw`` tokens are the patch grid
  in row-major order (ViT, DeiT, DINOv2, CLIP ViT; timm and torchvision).

:func:`read_layout` reads the layout from the output's shape, the input size and what the model
says of itself (timm's ``num_prefix_tokens``, a torchvision ``class_token``, register tokens, the
patch size), and never guesses: when two readings fit, it raises :class:`LayoutError` naming
``layout="nchw" | "nhwc" | "tokens"`` (and ``grid=(h, w)`` where the grid cannot be inferred).
A 1x1 grid is refused (a map over one position shows no location), and so are the internals of an
attention module (queries, keys, values, per-head attention weights are not image features).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

LAYOUTS = ("nchw", "nhwc", "tokens")
MAX_PREFIX = 8
"""Tokens before the grid that are searched for when the model does not say (class, registers)."""

_NCHW_MODULES = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Upsample,
)


class LayoutError(ValueError):
    """The explained layer's output cannot be read as channel maps (the message says why)."""


@dataclass(frozen=True)
class Layout:
    """How one layer's output is read.

    Attributes:
        kind: ``"nchw"``, ``"nhwc"`` or ``"tokens"``.
        grid: the spatial grid ``(h, w)``.
        channels: K, the number of channel maps.
        prefix: tokens before the grid (``"tokens"`` only; 0 otherwise).
    """

    kind: str
    grid: tuple[int, int]
    channels: int
    prefix: int = 0

    def to_maps(self, t: Tensor) -> Tensor:
        """The layer output (or its gradient) in this layout → channel maps ``(B,K,h,w)``.

        Differentiable (a permute, a slice and a reshape); prefix tokens are dropped.
        """
        h, w = self.grid
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        grid = t[:, self.prefix :]
        return grid.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    def describe(self) -> str:
        """``"tokens (1 prefix + 7x7 grid, 192 channels)"``: what an error or caption says."""
        h, w = self.grid
        if self.kind == "tokens":
            return f"tokens ({self.prefix} prefix + {h}x{w} grid, {self.channels} channels)"
        return f"{self.kind} ({h}x{w} grid, {self.channels} channels)"


def _option_hint(shape: tuple[int, ...]) -> str:
    return f'say how to read {shape}: layout="nchw" (B,C,h,w) | "nhwc" (B,h,w,C) | "tokens" (B,N,C)'


def consistent(h: int, w: int, image_size: tuple[int, int]) -> bool:
    """Whether a grid ``h x w`` can come from an ``H x W`` input by one stride (with rounding).

    Both strides ``H/h`` and ``W/w`` must agree within what rounding of ``h`` and ``w`` (one
    cell each, plus 5%) allows; the grid may not be larger than the input.
    """
    H, W = image_size
    if h < 1 or w < 1 or h > H or w > W:
        return False
    sh, sw = H / h, W / w
    return max(sh, sw) / min(sh, sw) <= 1.05 + 1.5 / min(h, w)


def model_prefix(model: nn.Module | None) -> int | None:
    """The number of tokens before the patch grid that the model declares, or ``None``.

    timm: ``num_prefix_tokens``; otherwise counted from ``cls_token`` / ``class_token``,
    ``dist_token`` and register tokens (``reg_token``, ``register_tokens``) parameters.
    Searched on the model first, then on its submodules (a backbone inside a wrapper).
    """
    if model is None:
        return None
    for module in model.modules():
        n = getattr(module, "num_prefix_tokens", None)
        if isinstance(n, int) and not isinstance(n, bool):
            return n
        count, found = 0, False
        for attr in ("cls_token", "class_token", "dist_token"):
            token = getattr(module, attr, None)
            if isinstance(token, Tensor):
                count, found = count + 1, True
        for attr in ("reg_token", "register_tokens"):
            token = getattr(module, attr, None)
            if isinstance(token, Tensor) and token.dim() >= 2:
                count, found = count + token.shape[-2], True
        if found:
            return count
    return None


def model_patch(model: nn.Module | None) -> tuple[int, int] | None:
    """The patch size ``(ph, pw)`` a vision transformer declares (timm or torchvision), or None."""
    if model is None:
        return None
    for module in model.modules():
        for owner in (module, getattr(module, "patch_embed", None)):
            size = getattr(owner, "patch_size", None)
            if isinstance(size, int) and not isinstance(size, bool):
                return (size, size)
            if isinstance(size, (tuple, list)) and len(size) == 2:
                return (int(size[0]), int(size[1]))
    return None


def token_grids(
    n: int, image_size: tuple[int, int], prefix: int | None
) -> list[tuple[int, tuple[int, int]]]:
    """Every ``(prefix, (gh, gw))`` with ``n - prefix = gh*gw``, the grid consistent with the input.

    ``prefix`` given: only that prefix; otherwise 0..``MAX_PREFIX``.
    """
    out = []
    for p in [prefix] if prefix is not None else range(MAX_PREFIX + 1):
        m = n - p
        if m < 2:
            continue
        for gh in range(1, math.isqrt(m) + 1):
            if m % gh:
                continue
            for pair in {(gh, m // gh), (m // gh, gh)}:
                if consistent(*pair, image_size) and _tight(pair, image_size):
                    out.append((p, pair))
    return sorted(set(out))


def _tight(grid: tuple[int, int], image_size: tuple[int, int]) -> bool:
    """Patch grids come from one integer patch size ``p``: ``gh = H/p`` and ``gw = W/p``, each
    rounded down (no padding) or up (padded edge patches)."""
    (gh, gw), (H, W) = grid, image_size
    for p in range(1, max(H, W) + 1):
        if (gh, gw) in ((H // p, W // p), (-(-H // p), -(-W // p))):
            return True
    return False


def read_layout(
    shape: tuple[int, ...],
    image_size: tuple[int, int],
    *,
    layout: str | None = None,
    grid: tuple[int, int] | None = None,
    model: nn.Module | None = None,
    module: nn.Module | None = None,
    name: str = "the layer",
) -> Layout:
    """Read an output of ``shape`` made from an input of ``image_size = (H, W)``.

    ``layout``/``grid`` are what the caller said (``None``: infer). ``model`` tells the prefix
    tokens and the patch size of a transformer; ``module`` (the layer) breaks a tie between
    ``nchw`` and ``nhwc`` (a ``Conv2d`` is channels-first, a ``Linear``/``LayerNorm`` on a 4-D
    tensor channels-last). Raises :class:`LayoutError` with the reason and the option to pass.
    """
    shape = tuple(int(s) for s in shape)
    if layout is not None and layout not in LAYOUTS:
        raise LayoutError(
            f"layout must be None (inferred) or one of {list(LAYOUTS)}, got {layout!r}"
        )
    if grid is not None:
        if not (
            isinstance(grid, (tuple, list))
            and len(grid) == 2
            and all(isinstance(g, int) and g >= 1 for g in grid)
        ):
            raise LayoutError(f"grid must be (h, w), two ints >= 1, got {grid!r}")
        grid = (int(grid[0]), int(grid[1]))
    if len(shape) == 3 and layout in (None, "tokens"):
        found = _read_tokens(shape, image_size, grid, model, name)
    elif len(shape) == 4 and layout != "tokens":
        found = _read_4d(shape, image_size, layout, grid, module, model, name)
    elif len(shape) in (3, 4):
        raise LayoutError(f"{name} outputs {shape}, which cannot be read as layout={layout!r}")
    else:
        raise LayoutError(
            f"{name} outputs {shape}: not a map. The explained layer must output channel maps on "
            "a grid: 4-D (B,C,h,w) or (B,h,w,C), or tokens (B,N,C); pick a convolutional layer "
            "or a transformer block (layer=None picks one)"
        )
    if found.grid == (1, 1):
        raise LayoutError(
            f"{name} has a 1x1 spatial output ({shape}): a map over a single position cannot "
            "show where anything is (it would be rounding noise); explain an earlier layer with "
            "a spatial grid"
        )
    return found


def _read_4d(
    shape: tuple[int, ...],
    image_size: tuple[int, int],
    layout: str | None,
    grid: tuple[int, int] | None,
    module: nn.Module | None,
    model: nn.Module | None,
    name: str,
) -> Layout:
    readings = {
        "nchw": Layout("nchw", (shape[2], shape[3]), shape[1]),
        "nhwc": Layout("nhwc", (shape[1], shape[2]), shape[3]),
    }
    if layout is not None:
        chosen = readings[layout]
        if grid is not None and chosen.grid != grid:
            raise LayoutError(
                f"{name} outputs {shape}: layout={layout!r} gives a {chosen.grid} grid, "
                f"not grid={grid}"
            )
        return chosen
    fits = [r for r in readings.values() if consistent(*r.grid, image_size)]
    if grid is not None:
        fits = [r for r in readings.values() if r.grid == grid]
    if len(fits) == 1:
        return fits[0]
    prior = _module_prior(module, model) if len(fits) == 2 else None
    if prior is not None:
        return readings[prior]
    if not fits:
        raise LayoutError(
            f"{name} outputs {shape} for a {image_size[0]}x{image_size[1]} input: neither "
            "(B,C,h,w) nor (B,h,w,C) gives a grid with the input's aspect ratio; "
            + _option_hint(shape)
        )
    raise LayoutError(
        f"{name} outputs {shape} for a {image_size[0]}x{image_size[1]} input: it reads as "
        f"{readings['nchw'].describe()} and as {readings['nhwc'].describe()}; "
        + _option_hint(shape)
    )


def _module_prior(module: nn.Module | None, model: nn.Module | None = None) -> str | None:
    """``"nchw"`` / ``"nhwc"`` when the module that made the output fixes the channel axis.

    The module itself when its type says it (``Conv2d``, ``BatchNorm2d``, pooling: NCHW;
    ``Linear``, ``LayerNorm`` on a 4-D tensor: NHWC); otherwise (a container, an activation,
    dropout) the nearest typed module before it in ``model.named_modules()`` order, among its
    own descendants first: layout-neutral modules keep the layout of what feeds them. A
    ``Permute``-like module or none found: None (the caller reports the ambiguity).
    """
    if module is None:
        return None
    own = _type_prior(module)
    if own is not None:
        return own
    if not list(module.children()) and not _neutral(module):
        return None  # a module of its own kind (a custom op): its type does not say
    order = list(module.modules())[1:][::-1]
    if model is not None:
        everything = list(model.modules())
        if any(m is module for m in everything):
            index = next(i for i, m in enumerate(everything) if m is module)
            order += everything[:index][::-1]
    for candidate in order:
        if "permute" in type(candidate).__name__.lower():
            return None
        if len(list(candidate.children())) == 0:
            prior = _type_prior(candidate)
            if prior is not None:
                return prior
            if not _neutral(candidate):
                return None
    return None


def _type_prior(module: nn.Module) -> str | None:
    if isinstance(module, _NCHW_MODULES) or "2d" in type(module).__name__.lower():
        return "nchw"
    if isinstance(module, (nn.Linear, nn.LayerNorm)):
        return "nhwc"
    return None


_NEUTRAL = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish,
            nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Dropout, nn.Identity)  # fmt: skip


def _neutral(module: nn.Module) -> bool:
    """An element-wise module: it keeps the layout of its input."""
    return isinstance(module, _NEUTRAL) or "drop" in type(module).__name__.lower()


def _read_tokens(
    shape: tuple[int, ...],
    image_size: tuple[int, int],
    grid: tuple[int, int] | None,
    model: nn.Module | None,
    name: str,
) -> Layout:
    _batch, n, channels = shape
    if grid is not None:
        prefix = n - grid[0] * grid[1]
        if prefix < 0:
            raise LayoutError(f"{name} has {n} tokens, fewer than the {grid} grid needs")
        return Layout("tokens", grid, channels, prefix)
    known = model_prefix(model)
    patch = model_patch(model)
    if known is not None and patch is not None:
        gh, gw = image_size[0] // patch[0], image_size[1] // patch[1]
        if gh * gw + known == n:
            return Layout("tokens", (gh, gw), channels, known)
    candidates = token_grids(n, image_size, known)
    if len(candidates) > 1 and patch is not None:
        by_patch = [
            c
            for c in candidates
            if abs(image_size[0] / c[1][0] - patch[0]) < 1
            and abs(image_size[1] / c[1][1] - patch[1]) < 1
        ]
        candidates = by_patch or candidates
    if len(candidates) == 1:
        prefix, found = candidates[0]
        return Layout("tokens", found, channels, prefix)
    said = f"the model declares {known} prefix tokens, and " if known is not None else ""
    if not candidates:
        raise LayoutError(
            f"{name} outputs {shape} for a {image_size[0]}x{image_size[1]} input: {said}no "
            f"grid of its {n} tokens (after up to {MAX_PREFIX} class/register tokens) has the "
            'input\'s aspect ratio; pass layout="tokens" and grid=(h, w), or explain a layer '
            "with a spatial grid"
        )
    shown = ", ".join(f"{p} prefix + {g[0]}x{g[1]}" for p, g in candidates[:4])
    raise LayoutError(
        f"{name} outputs {shape}: its {n} tokens read as several grids ({shown}); "
        'pass layout="tokens" and grid=(h, w) to say which'
    )


def attention_internal(model: nn.Module, name: str) -> str | None:
    """Why layer ``name`` cannot be explained because it is inside an attention module, or None.

    Queries, keys, values, their norms, per-head attention weights and their dropout live inside
    the attention module; their axes are heads and tokens, not channels on the image grid.
    """
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        owner_name = ".".join(parts[:cut])
        owner = model.get_submodule(owner_name)
        if is_attention(owner):
            return (
                f"layer {name!r} is inside the attention module {owner_name!r} "
                f"({type(owner).__name__}): its outputs are per-head queries, keys, values or "
                "attention weights, not features on the image grid; explain a block output "
                "(layer=None picks the last transformer block)"
            )
    return None


def is_attention(module: nn.Module) -> bool:
    """An attention module: ``nn.MultiheadAttention`` or a class whose name says Attention."""
    return isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower()


class Reader:
    """Reads one layer's output when it is first seen (a forward hook calls :meth:`read`)."""

    def __init__(
        self,
        model: nn.Module,
        name: str,
        module: nn.Module,
        image_size: tuple[int, int],
        layout: str | None = None,
        grid: tuple[int, int] | None = None,
        batch: int | None = None,
    ) -> None:
        self.model, self.name, self.module = model, name, module
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.layout, self.grid, self.batch = layout, grid, batch
        reason = attention_internal(model, name) if name else None
        if reason is not None:
            raise LayoutError(reason)

    def read(self, output: Tensor) -> Layout:
        """The :class:`Layout` of ``output`` (its first axis must be the batch, when known)."""
        batch = self.batch
        if batch is not None and output.dim() >= 1 and output.shape[0] != batch:
            raise LayoutError(
                f"layer {self.name!r} outputs {tuple(output.shape)}, whose first axis is not the "
                f"batch of {batch} (windows or heads folded into it); explain a block output"
            )
        return read_layout(
            tuple(output.shape),
            self.image_size,
            layout=self.layout,
            grid=self.grid,
            model=self.model,
            module=self.module,
            name=f"layer {self.name!r}",
        )


def default_layer_name(model: nn.Module, layers: dict[str, Layout]) -> str | None:
    """The layer ``layer=None`` explains, from :func:`readable_layers` ``layers``.

    - A transformer (the model has attention modules): a transformer block's output on the
      token grid (or the channels-last grid of Swin), never the patch embedding, never attention
      internals. Blocks are the readable children of a ``Sequential``/``ModuleList`` that contain
      attention (``blocks.i`` in timm, ``encoder.layers.encoder_layer_i`` in torchvision, Swin
      stages). Measured: with a class token (or other prefix tokens) the *last* block's patch
      tokens never reach the output (only the class token goes on, through a per-token norm),
      so their gradient is exactly zero and Grad-FAM/Grad-CAM maps are blank (timm
      ``vit_tiny_patch16_224``, ``deit_tiny_distilled``, a register-token DINOv2 ViT and
      torchvision ``vit_b_16``: every channel weight 0). The default is therefore the
      second-to-last block's output (the last block's input, the latest layer whose patch
      tokens still feed the class token; the layer the common practice explains through
      ``blocks[-1].norm1``); without prefix tokens (average-pooled ViTs, Swin) the last block.
      Measured on the trained zoo ViTs (4 blocks, class token), ``famwidget evaluate --cases
      --blocks --methods grad-cam grad-fam score-cam score-fam -n 16 --steps 8
      --randomisation-images 0``; deletion lower, insertion and mass in mask higher are better;
      random maps: mass 0.10 on the petals, 0.13 on the identity parts:

      ==============  =============================  ===============================
      layer           vit_flowers Grad-CAM           vit_reid Grad-FAM
                      (del / ins / mass)             (del / ins / mass)
      ==============  =============================  ===============================
      blocks.0        0.918 / 0.991 / 0.199          0.504 / 0.797 / 0.271
      blocks.1        0.932 / 0.983 / 0.285          0.697 / 0.765 / 0.187
      blocks.2.norm1  0.885 / 0.990 / 0.258          0.537 / 0.805 / 0.242
      blocks.2 (now)  0.958 / 0.940 / 0.184          0.709 / 0.737 / 0.064
      blocks.3.norm1  0.942 / 0.956 / 0.227          0.694 / 0.765 / 0.142
      blocks.3, norm  blank (zero gradient)          blank (zero gradient)
      ==============  =============================  ===============================

      Score-CAM / Score-FAM vary less over the layers (petal mass 0.54-0.63, identity-part
      mass 0.35-0.41); for them too the tokens after a norm score at least as well as before
      it (Score-FAM: blocks.3.norm1 mass 0.402, deletion 0.394 against blocks.2's 0.354 and
      0.420). So, measured: the same tokens read *after* the norm (``blocks[-1].norm1``)
      beat the default on every column for both gradient methods, and an earlier block
      (``blocks.1`` / ``blocks.2.norm1``) is better still for Grad-FAM/Grad-CAM. Those means
      hide blank maps, though: at ``blocks.3.norm1`` the ReLU of the weighted sum is zero
      everywhere (``exp.degenerate`` set) for 10 of 16 re-ID images under Grad-FAM and 2 of 12
      flowers under Grad-CAM, where ``blocks.2`` gave none on the images tested
      (``tests/test_zoo.py``). A default that is blank on most images of a case is worse than
      a weaker map, so the default stays the second-to-last block's output; pass
      ``layer="blocks.<last>.norm1"`` where its maps are not degenerate.
    - Any other model: the last layer, in execution order, with an ``nchw`` grid larger than 1x1
      (as before layouts were read).
    """
    modules = dict(model.named_modules())
    has_attention = any(is_attention(m) for m in modules.values())
    if has_attention:
        blocks = [
            n
            for n in layers
            if _in_container(modules, n) and any(is_attention(m) for m in modules[n].modules())
        ]
        if blocks and layers[blocks[-1]].prefix > 0 and len(blocks) > 1:
            return blocks[-2]
        if blocks:
            return blocks[-1]
    nchw = [n for n, lay in layers.items() if lay.kind == "nchw"]
    if nchw:
        return nchw[-1]
    return next(reversed(layers), None) if layers else None


def _in_container(modules: dict[str, nn.Module], name: str) -> bool:
    parent = name.rpartition(".")[0]
    if not name or parent not in modules:
        return False
    return isinstance(modules[parent], (nn.Sequential, nn.ModuleList))
