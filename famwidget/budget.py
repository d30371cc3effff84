"""What a Score-FAM / Score-CAM run will cost, estimated before it starts, and refused past a limit.

A run does one masked forward pass per (image, channel) pair of the explained layer. Before the
clean pass, :func:`estimate` runs the model twice on one image *downscaled* to about
``PROBE_PIXELS`` (256x256 on a CPU, 512x512 on CUDA; smaller images run at their own size), with
a hook on the explained layer that reads its channel count K and output size, and scales:

    forwards  = B * K (+ B for a baseline pass)          # an upper bound: constant channels skip
    seconds   = forwards * t_probe * (H*W) / (h*w)       # convolutions cost ~ pixels
    memory    >= B * (input + layer output) bytes at full size (the clean pass keeps both)

:func:`check_budget` refuses when ``seconds > max_seconds`` (default 600 s; ``None``: no limit)
or when the memory lower bound exceeds the memory available now, with the estimate and the ways
out in the message. The estimate itself costs two small forward passes (a 4096x4096 image is
refused in well under a second on a CPU).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_MAX_SECONDS = float(os.environ.get("FAMWIDGET_MAX_SECONDS", "600"))
"""``max_seconds=`` of Score-FAM / Score-CAM: ten minutes, about what a user waits for a map.
The environment variable ``FAMWIDGET_MAX_SECONDS`` sets another default (read at import); the
test suite raises it, because the timed probe follows the load of a shared CI machine."""

PROBE_PIXELS = {"cpu": 256 * 256, "cuda": 512 * 512}
"""Pixels of the timed probe image per device (other devices: the CPU value)."""

MIN_PROBE_SIDE = 32
"""No side of the probe is downscaled below this (deep CNNs still run at 32x32)."""


@dataclass(frozen=True)
class Estimate:
    """The cost of a Score-* run on ``images`` ``(B,C,H,W)``."""

    forwards: int
    """Masked forward passes, at most (``B * K`` plus the baseline passes)."""
    channels: int
    """K, channels of the explained layer."""
    images: int
    """B."""
    seconds_per_forward: float
    """One copy at full size, scaled from the probe."""
    bytes_needed: int
    """A lower bound on the memory of the clean pass at full size."""
    size: tuple[int, int]
    probe: tuple[int, int]
    scored: int = 0
    """Channels scored per image (``K``, or fewer under ``budget=`` / ``max_channels=``)."""

    @property
    def seconds(self) -> float:
        return self.forwards * self.seconds_per_forward


def estimate(
    model: nn.Module,
    images: Tensor,
    module: nn.Module,
    autocast: torch.dtype | None = None,
    baseline_passes: int = 0,
    channel_limit: int | None = None,
) -> Estimate:
    """Estimate a Score-* run on ``images`` ``(B,C,H,W)`` explained at ``module`` (see above).

    ``channel_limit``: at most this many masked passes per image (Score-FAM's ``budget=`` or
    ``max_channels=``), instead of one per channel.
    """
    from .tap import preserved

    batch, _, height, width = images.shape
    probe = probe_size(height, width, images.device.type)
    x = images[:1]
    if probe != (height, width):
        x = F.interpolate(x.float(), size=probe, mode="bilinear", align_corners=False)
        x = x.to(images.dtype)
    seen: list[Tensor] = []

    def hook(m: nn.Module, inputs: tuple, output: object) -> None:
        out = output[0] if isinstance(output, (tuple, list)) and output else output
        if isinstance(out, Tensor) and not seen:
            seen.append(out)

    with preserved(model):
        handle = module.register_forward_hook(hook)
        try:
            seconds = _seconds_at(model, x, (height, width), autocast)
        except Exception:
            if probe == (height, width):
                raise
            # The model does not take the smaller size (fixed input size): probe at full size.
            seen.clear()
            probe = (height, width)
            seconds = _timed_forward(model, images[:1], autocast)
        finally:
            handle.remove()
    scale = (height * width) / (probe[0] * probe[1])
    layer = seen[0] if seen else None
    channels = layer_channels(model, module, layer, probe)
    layer_bytes = 0 if layer is None else layer.numel() * max(layer.element_size(), 4)
    per_image = images[0].numel() * images.element_size() + layer_bytes * scale
    return Estimate(
        forwards=batch * min(channels, channel_limit or channels) + baseline_passes,
        scored=min(channels, channel_limit or channels),
        channels=channels,
        images=batch,
        seconds_per_forward=seconds,
        bytes_needed=int(batch * per_image),
        size=(height, width),
        probe=probe,
    )


def layer_channels(
    model: nn.Module, module: nn.Module, output: Tensor | None, size: tuple[int, int]
) -> int:
    """K of the layer ``output`` seen at image ``size``, read as the methods read it
    (``famwidget.layout``: NCHW, NHWC or tokens); dim 1 (3-D: the last dim) when unreadable."""
    if output is None or output.dim() < 2:
        return 1
    try:
        from .layout import Reader

        return int(Reader(model, "", module, size).read(output).channels)
    except Exception:  # an estimate: the method itself reports an unreadable layer
        return int(output.shape[-1] if output.dim() == 3 else output.shape[1])


def probe_size(height: int, width: int, device: str) -> tuple[int, int]:
    """The probe image's ``(h, w)``: the same aspect ratio, about ``PROBE_PIXELS`` pixels."""
    budget = PROBE_PIXELS.get(device, PROBE_PIXELS["cpu"])
    if height * width <= budget:
        return height, width
    s = math.sqrt(budget / (height * width))
    h = min(height, max(MIN_PROBE_SIDE, round(height * s)))
    w = min(width, max(MIN_PROBE_SIDE, round(width * s)))
    return h, w


def _seconds_at(
    model: nn.Module, x: Tensor, size: tuple[int, int], autocast: torch.dtype | None
) -> float:
    """Seconds of one forward at ``size``: the faster of two timed forwards of ``x``
    ``(1,C,h,w)``, scaled by pixels (a slight overestimate: a small forward's fixed cost is
    scaled too; a fit through two sizes was tried and was less stable on a busy machine)."""
    t = min(_timed_forward(model, x, autocast) for _ in range(2))
    return t * (size[0] * size[1]) / (x.shape[-2] * x.shape[-1])


def _timed_forward(model: nn.Module, x: Tensor, autocast: torch.dtype | None) -> float:
    cuda = x.device.type == "cuda"
    enabled = autocast is not None
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=autocast, enabled=enabled):
        if cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        model(x)
        if cuda:
            torch.cuda.synchronize(x.device)
    return time.perf_counter() - start


def available_bytes(device: torch.device) -> int | None:
    """Memory free for tensors on ``device`` now (CUDA: free memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_budget(
    model: nn.Module,
    images: Tensor,
    module: nn.Module,
    *,
    method: str,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    autocast: torch.dtype | None = None,
    baseline_passes: int = 0,
    channel_limit: int | None = None,
) -> Estimate | None:
    """Refuse a Score-* run that would exceed ``max_seconds`` or the memory available.

    Returns the :class:`Estimate` (``None`` when ``max_seconds`` is ``None``: nothing is
    estimated, nothing refused). Raises ``ValueError`` with the estimate and the ways out.
    """
    if max_seconds is None:
        return None
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)):
        raise TypeError(
            f"max_seconds must be a number of seconds or None (no limit), not {max_seconds!r}"
        )
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None (no limit), got {max_seconds!r}")
    cost = estimate(model, images, module, autocast, baseline_passes, channel_limit)
    h, w = cost.size
    ways = (
        "Ways out: a smaller input (resize the images), a later layer (fewer, coarser channels), "
        "fewer images per call, grad-fam (one backward pass), or "
        f"max_seconds=None to run it anyway (or max_seconds={math.ceil(cost.seconds * 1.5)})"
    )
    if cost.seconds > max_seconds:
        smaller = _fitting_side(cost, max_seconds)
        hint = f" (at about {smaller} px on the longer side it would fit)" if smaller else ""
        scored = (
            f"{cost.scored} of {cost.channels}" if cost.scored < cost.channels else cost.channels
        )
        raise ValueError(
            f"{method} would run up to {cost.forwards} masked forward passes ({scored} "
            f"channels x {cost.images} image(s) at {h}x{w}) at about "
            f"{cost.seconds_per_forward:.3g} s each: about {_duration(cost.seconds)}, over "
            f"max_seconds={max_seconds:g}{hint}. {ways}"
        )
    free = available_bytes(images.device)
    if free is not None and cost.bytes_needed > free:
        raise ValueError(
            f"{method} at {h}x{w} needs at least {cost.bytes_needed / 2**30:.2f} GiB for its "
            f"clean pass ({cost.images} image(s), layer output of {cost.channels} channels), "
            f"but only {free / 2**30:.2f} GiB is available on {images.device}. {ways}"
        )
    return cost


def _fitting_side(cost: Estimate, max_seconds: float) -> int | None:
    """The longer side at which the run would take about ``max_seconds`` (pixels scale)."""
    shrink = math.sqrt(max_seconds / cost.seconds)
    side = int(max(cost.size) * shrink)
    return side if side >= MIN_PROBE_SIDE else None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
