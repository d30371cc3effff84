"""Benchmarks of CNN Fixations.

- :func:`run` (called by ``python -m famwidget.bench``): milliseconds per image of fixations on
  ResNet-50, ConvNeXt-T, EfficientNet-B0 and ViT-B/16 (``weights=None``) at 224x224, each next
  to one forward pass of the same model, timed in alternation; the goal is fixations < 3
  forward passes.
- :func:`loc_study` (also ``python -m famwidget.bench.fixations loc``): how well
  ``loc="center"`` and ``loc="argmax"`` localise the discriminative parts on held-out data of
  the zoo models (flower classifiers, self-supervised net, re-ID net); it sets the default.

``--smoke`` (CI): the same tables, rows and columns, each model at 32x32 (``SMOKE_SIZE``; ViT
built for that size), one image, one round with no warm-up, and the localisation study on 2
images per model; its figures mean nothing.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import print_table, seconds, smoke

SMOKE_SIZE = 32


def _paired(
    fns: tuple[Callable[[], Any], Callable[[], Any]],
    device: torch.device,
    repeats: int,
    warm_up: bool = True,
) -> tuple[float, float, float]:
    """Median seconds of two functions timed in alternation (after one warm-up each unless
    ``warm_up`` is false), and the median of their per-round ratios: on a shared machine, load
    changes hit both alike."""
    for fn in fns if warm_up else ():
        fn()
    rounds = [[seconds(fn, device) for fn in fns] for _ in range(repeats)]
    first, second = zip(*rounds, strict=True)
    ratio = statistics.median(b / a for a, b in rounds)
    return statistics.median(first), statistics.median(second), ratio


MODELS = ("resnet50", "convnext_tiny", "efficientnet_b0", "vit_b_16")


def measure(
    device: str = "cpu",
    batch: int = 2,
    repeats: int = 5,
    size: int = 224,
    name: str = "resnet50",
    warm_up: bool = True,
) -> dict:
    """Milliseconds per image of one forward pass and of fixations (torchvision ``name``,
    weights=None; a zero-initialised classifier, as ViT's, is given random weights)."""
    import torchvision

    import famwidget as fw

    dev = torch.device(device)
    torch.manual_seed(0)
    extra = {"image_size": size} if name.startswith("vit") and size != 224 else {}
    model = torchvision.models.get_model(name, weights=None, **extra).eval().to(dev)
    for m in model.modules():
        if isinstance(m, nn.Linear) and not bool(m.weight.any()):
            nn.init.normal_(m.weight, std=0.02)
    images = torch.randn(batch, 3, size, size, device=dev)

    def forward() -> None:
        with torch.inference_mode():
            model(images)

    last: list[Any] = []

    def explain() -> None:
        last[:] = [fw.explain(model, images, method="fixations")]

    forward_s, fixations_s, ratio = _paired((forward, explain), dev, repeats, warm_up)
    points = last[0].points
    return {
        "model": name,
        "device": str(dev),
        "batch": batch,
        "size": size,
        "forward_ms": 1000 * forward_s / batch,
        "fixations_ms": 1000 * fixations_s / batch,
        "ratio": ratio,
        "points": [int(p.shape[0]) for p in points],
    }


def run(args: Any = None) -> None:
    """Print the figures; ``args`` may carry ``.device`` (str) and ``.quick`` (bool)."""
    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    quick, tiny = bool(getattr(args, "quick", False)), smoke(args)
    repeats = 1 if tiny else 2 if quick else 5
    size = SMOKE_SIZE if tiny else 224
    rows = []
    for name in MODELS:
        batch = 1 if quick or tiny else 2
        r = measure(str(device), batch, repeats, size, name, warm_up=not tiny)
        rows.append([r["model"], r["device"], r["forward_ms"], r["fixations_ms"], r["ratio"],
                     "< 3"])  # fmt: skip
    print(f"CNN Fixations (weights=None), {size}x{size}, medians of {repeats} alternating runs")
    print_table(
        ["model", "device", "forward ms/image", "fixations ms/image", "fixations / forward",
         "goal"],
        rows,
    )  # fmt: skip
    try:
        loc_study(2 if tiny else 50 if quick else 200, str(device))
    except (ImportError, FileNotFoundError) as missing:  # the zoo or its weights are absent
        print(f"(localisation study skipped: {missing})")


# ----------------------------------------------------------------------------- loc study


def _localisation(exp: Any, masks: torch.Tensor) -> tuple[float, float, float]:
    """Heatmap mass inside ``masks`` (B,H,W), pointing game (peak inside), and the share of
    fixations inside, averaged over the images."""
    heat = exp.heatmap.float()
    mass = (heat * masks).sum((1, 2)) / heat.sum((1, 2)).clamp_min(1e-9)
    peaks = heat.flatten(1).argmax(1)[:, None]
    pointing = masks.flatten(1).gather(1, peaks).float()
    hits = torch.cat([masks[b][p[:, 0], p[:, 1]] for b, p in enumerate(exp.points)]).float()
    return float(mass.mean()), float(pointing.mean()), float(hits.mean())


def _zoo_cases(n: int) -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    """(name, model, images, masks of the discriminative parts) on held-out data of the zoo."""
    import numpy as np

    from famwidget import zoo
    from famwidget.zoo import heldout

    cases = []
    for variant in ("single", "double"):
        model, ds = zoo.flower_net(variant), heldout.flower_test(variant, n)
        cases.append((f"flower_net {variant}", model, ds.images, ds.masks))
    model, ds = zoo.ssl_net(), heldout.flower_test("single", n)
    cases.append(("ssl_net", model, ds.images, ds.masks))
    split = heldout.person_split(False)
    pick = np.linspace(0, len(split.images) - 1, n).astype(int)
    cases.append(("reid_net", zoo.reid_net(), split.images[pick], split.masks[pick]))
    return [
        (name, model, model.preprocess.batch(images), torch.from_numpy(masks))
        for name, model, images, masks in cases
    ]


def loc_study(n: int = 200, device: str = "cpu") -> None:
    """Print, for ``loc="center"`` and ``loc="argmax"``, how well the fixations of the zoo
    models localise the discriminative parts of ``n`` held-out images (the parts that define
    the flower class or the person's identity): heatmap mass inside the parts, pointing game,
    and share of fixations inside. This measurement sets the default ``loc``."""
    import famwidget as fw

    rows = []
    for name, model, images, masks in _zoo_cases(n):
        model, images = model.to(device), images.to(device)
        for loc in ("center", "argmax"):
            exp = fw.explain(model, images, method="fixations", loc=loc)
            rows.append([name, exp.target, loc, *_localisation(exp.cpu(), masks)])
    print(f"CNN Fixations: localisation of the discriminative parts, {n} held-out images each")
    print_table(["model", "target", "loc", "mass in parts", "pointing", "fixations in"], rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["loc"]:
        loc_study()
    else:
        run()
