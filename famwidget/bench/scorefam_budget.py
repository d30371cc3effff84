"""The approximate Score-FAM (``budget=k``) on the shipped re-ID set: speed beside fidelity.

``famwidget bench --only scorefam_budget``: the re-ID net (``fw.zoo.reid_net``, ``features``
layer, 128 channels) on 8 gallery images of held-out pedestrians (``fw.data.persons`` through
:func:`famwidget.demo.reid_demo`), for both weight rules (``softmax``, the peers' rule, and
``relu-baseline``, famwidget's default for embeddings) and several budgets. Per row:

- seconds per call (median of the rounds; every configuration and both peers run once per
  round, round-robin, so background load hits them alike) and the speed-up over the exact
  map and over the faster peer (pytorch-grad-cam / TorchCAM ScoreCAM on the same cosine
  target, exact, softmax weights: the work of the ``softmax`` exact row);
- masked forwards per call;
- fidelity: the Pearson r of each image's map to the exact map (lowest and median over the
  images), and the deletion AUC (:func:`famwidget.metrics.deletion_insertion`, blur baseline,
  score ``cos(f(x'), f(x))``; lower is better) with its change from the exact map's.

``--smoke`` (CI): the same table, rows and columns (every budget, both rules, the peers) on
one gallery image (``SMOKE_IMAGES``), one round and no warm-up; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import print_table, smoke

BUDGETS = (2, 4, 8, 16, 32, 64)
QUICK_BUDGETS = (4, 8, 16)
RULES = ("softmax", "relu-baseline")
IMAGES = 8
SMOKE_IMAGES = 1


def correlations(exact: Tensor, approx: Tensor) -> list[float]:
    """Pearson r per image of two ``(B,H,W)`` map stacks (float64)."""
    return [
        float(torch.corrcoef(torch.stack([a.flatten(), e.flatten()]).double())[0, 1])
        for a, e in zip(approx, exact, strict=True)
    ]


def run(args: argparse.Namespace) -> None:
    """Print the budget table (see the module docstring); ``--quick``: 3 budgets, 1 round."""
    import famwidget as fw

    from ..demo import reid_demo
    from ..metrics import deletion_insertion
    from ..targets import Embedding
    from .peers import CALLS, Case, build_work, installed

    quick, tiny = getattr(args, "quick", False), smoke(args)
    budgets = QUICK_BUDGETS if quick else BUDGETS
    repeats = getattr(args, "repeats", None) or (1 if quick or tiny else 3)
    device = torch.device(getattr(args, "device", None) or "cpu")
    n = SMOKE_IMAGES if tiny else IMAGES
    demo = reid_demo(n)
    model, images = demo.model.to(device), demo.gallery.to(device)
    work = build_work(Case("score-fam", "reid_net", n), str(device))
    peers = [t for t in ("pytorch-grad-cam", "torchcam") if installed(t)]

    def fam(rule: str, budget: int | None) -> Callable[[], Any]:
        return lambda: fw.explain(model, images, "score-fam", layer="features", weights=rule,
                                  budget=budget, max_seconds=None)  # fmt: skip

    configs: dict[tuple[str, int | None], Callable[[], Any]] = {
        (rule, budget): fam(rule, budget) for rule in RULES for budget in (None, *budgets)
    }
    calls: dict[Any, Callable[[], Any]] = dict(configs)
    for peer in peers:
        calls[peer] = lambda p=peer: CALLS[p](work, work.images)
    times: dict[Any, list[float]] = {key: [] for key in calls}
    results: dict[Any, Any] = {}
    load = [os.getloadavg()[0]]
    for key, call in [] if tiny else calls.items():  # warm-up
        results[key] = call()
    for _ in range(repeats):
        for key, call in calls.items():
            start = time.perf_counter()
            results[key] = call()
            times[key].append(time.perf_counter() - start)
    load.append(os.getloadavg()[0])
    median = {key: statistics.median(v) for key, v in times.items()}
    spread = {key: (max(v) - min(v)) / median[key] for key, v in times.items()}
    peer_best = min((median[p] for p in peers), default=None)
    rows = []
    for rule in RULES:
        exact = results[(rule, None)]
        auc0 = deletion_insertion(model, images, exact.heatmap, Embedding())[0].mean().item()
        for budget in (None, *budgets):
            exp = results[(rule, budget)]
            r = correlations(exact.heatmap, exp.heatmap)
            auc = deletion_insertion(model, images, exp.heatmap, Embedding())[0].mean().item()
            t = median[(rule, budget)]
            rows.append([
                rule, "exact" if budget is None else str(budget), exp.options["forwards"],
                f"{t:.3g} s ±{100 * spread[(rule, budget)]:.0f}%",
                f"{median[(rule, None)] / t:.1f}x",
                "-" if peer_best is None else f"{peer_best / t:.1f}x",
                f"{min(r):.4f} / {statistics.median(r):.4f}",
                f"{auc:.4f}", f"{auc - auc0:+.4f}",
            ])  # fmt: skip
    for peer in peers:
        rows.append(["softmax", f"{peer} (exact)", "-", f"{median[peer]:.3g} s "
                     f"±{100 * spread[peer]:.0f}%", "-", "-", "-", "-", "-"])  # fmt: skip
    threads = torch.get_num_threads()
    print(f"re-ID net features (128 channels), {n} images 128x64, {repeats} round(s), "
          f"{threads} torch threads, load {min(load):.1f}-{max(load):.1f}")  # fmt: skip
    print_table(
        ["weights", "budget", "forwards", "seconds", "vs exact", "vs faster peer",
         "r to exact (min / median)", "deletion AUC", "change"],
        rows,
    )  # fmt: skip
