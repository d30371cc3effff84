"""The record that describes one explanation method (a leaf module: explainers import it,
the registry collects their records, nothing here imports an explainer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .explanation import Explanation
from .targets import Target

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``precision=`` names and the autocast dtype each stands for (``None``: no autocast)."""


@dataclass(frozen=True)
class Method:
    """A method: its function, its default target, and whether it needs a layer.

    ``default_target`` makes the target used when the caller gives none; ``None`` lets the
    method decide (it then receives ``target=None``).
    """

    name: str
    function: Callable[..., Explanation]
    default_target: Callable[[], Target] | None
    needs_layer: bool = True
    summary: str = ""
    auto_precision: Callable[[nn.Module, Tensor], str] | None = None
    """What ``precision="auto"`` picks for ``(model, images)``; ``None``: always "fp32"."""
    requires: tuple[str, ...] = ()
    """Options the method cannot run without (``vebi``: a fitted ``interpreter``)."""
