"""Score-FAM on ResNet-18 ``layer4`` at 224x224 (random weights): speed against the device's limit.

Three tables:

1. the limit: plain ResNet-18 forward throughput (images/s) over batch size, memory format
   (contiguous / channels_last input / channels_last input and weights) and precision, measured
   here, in the same run (round-robin, best of 2-3 rounds, so that background load counts as
   little as possible);
2. Score-FAM per configuration: seconds per image, masked forwards per second, and the ratio of
   the time to the limit, ``K`` plain forwards (K = 512 channels) at the best configuration of
   table 1, timed between the Score-FAM batches so that both see the same background load;
3. agreement of the bf16 maps with the fp32 maps (Pearson correlation per image) on structured
   images (scikit-image photos when installed, smooth blobs otherwise).

``--smoke`` (CI): the same tables and columns, ``--quick``'s configurations at 64x64
(``SMOKE_SIZE``, the smallest size with a spatial ``layer4``), one image, batches of 1 and 2 in
the sweep, one round; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import print_table, seconds, smoke, synchronize

SIZE = 224
SMOKE_SIZE = 64
LAYER = "layer4"
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Config:
    precision: str
    layout: str  # "contiguous", "cl-input" (channels_last input), "cl-both" (input and weights)
    batch: int


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast runs natively: CUDA with bf16 support, or a CPU oneDNN accepts for bf16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def precisions(device: torch.device) -> list[str]:
    found = ["fp32"]
    if bf16_supported(device):
        found.append("bf16")
    if device.type == "cuda":
        found.append("fp16")
    return found


def structured_images(n: int, size: int = SIZE) -> Tensor:
    """``(n,3,size,size)`` ImageNet-normalised photos (scikit-image) or smooth blob images."""
    pictures = []
    try:
        from skimage import data

        for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
            pictures.append(torch.from_numpy(getattr(data, name)().copy()).permute(2, 0, 1))
    except Exception:  # scikit-image missing or without its data: synthetic images
        pictures = []
    out = []
    for i in range(n):
        if i < len(pictures):
            img = pictures[i].float() / 255
            side = min(img.shape[-2:])
            top, left = (img.shape[-2] - side) // 2, (img.shape[-1] - side) // 2
            img = img[:, top : top + side, left : left + side]
            img = F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True)[0]
        else:
            img = blob_image(size, seed=i)
        out.append((img.clamp(0, 1) - MEAN) / STD)
    return torch.stack(out)


def blob_image(size: int, seed: int) -> Tensor:
    """A smooth ``(3,size,size)`` image in [0,1]: a few coloured Gaussian blobs."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    img = torch.full((3, size, size), 0.3) + 0.05 * torch.randn(3, size, size, generator=g)
    for _ in range(4):
        cy, cx = (torch.rand(2, generator=g) * size).tolist()
        sigma = size * (0.05 + 0.1 * torch.rand(1, generator=g).item())
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        img += (torch.rand(3, 1, 1, generator=g) - 0.3) * blob
    return img.clamp(0, 1)


def plain_forward(
    model: nn.Module, config: Config, device: torch.device, size: int = SIZE
) -> Callable[[], None]:
    """A closure running one plain forward of ``config.batch`` random ``(3,size,size)`` images
    as ``config`` says."""
    if config.layout == "cl-both":
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(config.batch, 3, size, size, device=device)
    if config.layout != "contiguous":
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = PRECISIONS[config.precision]

    def forward() -> None:
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
        with torch.inference_mode(), autocast:
            model(x)

    forward()  # warm-up: kernels chosen, weights cast
    return forward


class Probe:
    """``on_progress`` for a timed Score-FAM run: between its batches, time plain forwards.

    The limit is measured interleaved with the run (one probe batch every ``every`` Score-FAM
    batches), so both see the same background load on a shared machine.
    """

    def __init__(self, forward: Callable[[], None], batch: int, device: torch.device, every: int):
        self.forward, self.batch, self.device, self.every = forward, batch, device, every
        self.probe_seconds = 0.0
        self.probe_images = 0
        self.run_seconds = 0.0
        self.batches = 0
        self.mark = 0.0

    def start(self) -> None:
        self.mark = time.perf_counter()

    def stop(self) -> None:
        synchronize(self.device)
        self.run_seconds += time.perf_counter() - self.mark

    def __call__(self, done: int, total: int, partial: object) -> None:
        self.stop()
        self.batches += 1
        if self.batches % self.every == 0 or (done == total and not self.probe_images):
            self.probe_seconds += seconds(self.forward, self.device)
            self.probe_images += self.batch
        self.start()

    @property
    def rate(self) -> float:
        """Plain forwards per second at the probed configuration."""
        return self.probe_images / self.probe_seconds


def sweep(
    model: nn.Module, device: torch.device, quick: bool, size: int = SIZE, tiny: bool = False
) -> list[tuple[Config, float]]:
    """Throughput (images/s) of every configuration, best first.

    Round-robin: every round times each configuration on the same number of images, and a
    configuration keeps its best round, so a burst of background load does not decide the order.
    ``tiny`` (smoke): ``quick``'s layouts at batches 1 and 2, one round of one batch each.
    """
    if device.type == "cuda":
        batches = [64, 256] if quick else [32, 64, 128, 256]
        work = 512
    else:
        batches = [8, 32] if quick else [8, 16, 32, 64]
        work = 32 if quick else 64
    if tiny:
        batches, work = [1, 2], 1
    layouts = ["contiguous", "cl-input"] + ([] if quick or tiny else ["cl-both"])
    configs = [
        Config(precision, layout, batch)
        for precision in precisions(device)
        for layout in layouts
        for batch in batches
    ]
    forwards = {c: plain_forward(model, c, device, size) for c in configs}
    best = dict.fromkeys(configs, 0.0)
    for _ in range(1 if tiny else 2 if quick else 3):
        for c in configs:
            repeats = max(1, work // c.batch)
            elapsed = seconds(lambda f=forwards[c], n=repeats: [f() for _ in range(n)], device)
            best[c] = max(best[c], repeats * c.batch / elapsed)
    return sorted(best.items(), key=lambda r: -r[1])


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two maps (any shape)."""
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1])


def run(args: argparse.Namespace) -> None:
    """Print the three tables (see the module docstring)."""
    import torchvision

    from ..api import explain

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(device)
    tiny = smoke(args)
    size = SMOKE_SIZE if tiny else SIZE
    n_images = 1 if args.quick or tiny else 4
    images = structured_images(n_images, size).to(device)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads", flush=True)  # fmt: skip

    results = sweep(model, device, args.quick, size, tiny)
    best_config = results[0][0]
    rows = [(c.precision, c.layout, c.batch, r) for c, r in results]
    print_table(["precision", "memory format", "batch", "images/s"], rows)

    k = 512
    configs = [("fp32", True)] if args.quick or tiny else [("fp32", False), ("fp32", True)]
    if "bf16" in precisions(device):
        configs.append(("bf16", True))
    probe_forward = plain_forward(model, best_config, device, size)
    maps: dict[str, Tensor] = {}
    rows = []
    for precision, channels_last in configs:
        every = 2 if args.quick or tiny else 1
        probe = Probe(probe_forward, best_config.batch, device, every)
        probe.start()
        exp = explain(
            model,
            images,
            "score-fam",
            layer=LAYER,
            precision=precision,
            channels_last=channels_last,
            on_progress=probe,
            max_seconds=None,
        )  # fmt: skip  (a benchmark: no cost refusal)
        probe.stop()
        maps.setdefault(precision, exp.heatmap.float().cpu())
        per_image = probe.run_seconds / n_images
        limit = k / probe.rate
        forwards = exp.options["forwards"]
        layout = "channels_last" if channels_last else "contiguous"
        row = (precision, layout, exp.options["batch_size"], per_image, forwards / n_images)
        rows.append((*row, forwards / probe.run_seconds, limit, per_image / limit))
    headers = ["precision", "input", "batch", "s/image", "forwards/image", "forwards/s",
               "limit s/image", "ratio"]  # fmt: skip
    print_table(headers, rows)
    print(
        f"limit: K={k} plain forwards at the best configuration ({best_config.precision}, "
        f"{best_config.layout}, batch {best_config.batch}), timed between the Score-FAM batches\n"
    )

    if "bf16" in maps:
        corr = [pearson(maps["fp32"][i], maps["bf16"][i]) for i in range(n_images)]
        rows = [(i, f"{c:.5f}") for i, c in [*enumerate(corr), ("min", min(corr))]]
        print_table(["image", "pearson(fp32, bf16)"], rows)
