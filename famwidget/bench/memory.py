"""Score-FAM's peak memory grows with the batch of masked copies, not with the channel count K.

``famwidget bench --only memory``: a small CNN whose explained layer has ``K`` channels
(:class:`WidthNet`, one 112x112 image), Score-FAM with ``batch_size`` masked copies per forward.
Two sweeps: K fixed (256), batch varies; batch fixed (16), K varies. Each point is measured in a
fresh subprocess (the rise of the resident set, ``VmHWM`` after a reset, above a process that
already ran one plain forward; on CUDA ``max_memory_allocated`` in this process), beside the
peak of one plain forward of ``batch_size`` copies in the same process: a wider layer makes
the network's own forward bigger, so what Score-FAM adds is the difference. At most one batch
of masked copies exists at a time, so the peak follows the batch; K only adds the ``(K,h,w)``
activations and ``(K,)`` scores.

``--smoke`` (CI): the same table, rows and columns (every K and batch) on one 16x16 image
(``SMOKE_SIZE``, a 4x4 grid at the layer); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import print_table, smoke

SIZE = 112
SMOKE_SIZE = 16
FIXED_K = 256
FIXED_BATCH = 16
BATCHES = (4, 16, 64)
WIDTHS = (64, 256, 1024)


class WidthNet(nn.Module):
    """``(B,3,S,S)`` → ``(B,64)``; ``features`` has ``k`` channels on an S/4 grid (28x28 at
    S=112)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, k, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(k, 64)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def probe(k: int, batch: int, device: str, size: int = SIZE) -> dict[str, float]:
    """One Score-FAM call on one ``(1,3,size,size)`` image in this process: peak memory rise
    (MB) and masked forwards."""
    import famwidget as fw

    from .peers import peak_rise_mb

    torch.manual_seed(0)
    model = WidthNet(k).eval().to(device)
    x = torch.rand(1, 3, size, size, device=device)
    with torch.no_grad():
        model(x)  # torch's one-time set-up is not the call's memory
    found: dict[str, float] = {}
    copies = x.expand(batch, -1, -1, -1).contiguous()

    def plain() -> None:
        with torch.inference_mode():
            model(copies)

    found["plain_mb"] = peak_rise_mb(plain, torch.device(device))

    def call() -> None:
        exp = fw.explain(model, x, "score-fam", layer="features", batch_size=batch,
                         max_seconds=None)  # fmt: skip
        found["forwards"] = exp.options["forwards"]

    found["rise_mb"] = peak_rise_mb(call, torch.device(device))
    return found


def measure(k: int, batch: int, device: str, size: int = SIZE) -> dict[str, float] | str:
    """:func:`probe` in a fresh subprocess on the CPU (in this process on CUDA)."""
    if torch.device(device).type == "cuda":
        return probe(k, batch, device, size)
    command = [sys.executable, "-m", "famwidget.bench.memory", str(k), str(batch), device,
               str(size)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> None:
    """Print both sweeps (see the module docstring)."""
    device = getattr(args, "device", None) or "cpu"
    size = SMOKE_SIZE if smoke(args) else SIZE
    points = [(FIXED_K, b) for b in BATCHES] + [(k, FIXED_BATCH) for k in WIDTHS if k != FIXED_K]
    rows = []
    for k, batch in points:
        found = measure(k, batch, device, size)
        if isinstance(found, str):
            rows.append([k, batch, "-", found, "-", "-"])
        else:
            rise, plain = found["rise_mb"], found["plain_mb"]
            rows.append([k, batch, int(found["forwards"]), f"{rise:.0f}", f"{plain:.0f}",
                         f"{rise - plain:.0f}"])  # fmt: skip
    unit = "CUDA allocated" if torch.device(device).type == "cuda" else "RSS"
    print(f"WidthNet, one {size}x{size} image, Score-FAM, {torch.get_num_threads()} threads")
    print_table(["K channels", "batch_size", "masked forwards", f"Score-FAM peak {unit} rise MB",
                 "one plain forward of the batch MB", "Score-FAM above it MB"],
                sorted(rows, key=lambda r: (r[0] != FIXED_K, r[0], r[1])))  # fmt: skip


def _main(argv: Sequence[str]) -> int:
    """``python -m famwidget.bench.memory K BATCH DEVICE [SIZE]``: one JSON line (a probe)."""
    if len(argv) not in (3, 4):
        print("usage: python -m famwidget.bench.memory K BATCH DEVICE [SIZE] "
              "(famwidget bench --only memory runs both sweeps)", file=sys.stderr)  # fmt: skip
        return 2
    size = int(argv[3]) if len(argv) == 4 else SIZE
    print(json.dumps(probe(int(argv[0]), int(argv[1]), argv[2], size)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
