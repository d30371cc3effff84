"""``famwidget evaluate`` under ``torchrun``: each rank scores a disjoint shard, metrics reduced.

    torchrun --standalone --nproc-per-node 2 -m famwidget evaluate --cases flowers -n 64

Every rank loads the same case, takes a contiguous block of its batches (whole batches of
``--batch`` images, so each image is explained in the very batch a single process would put it
in: the random reference maps, which are drawn per batch, are the same too) and computes the
per-image metrics of its block. Then the sums, sums of squares and counts of every per-image
metric are all-reduced (means and standard errors as one process computes them), the seconds are
summed, the peak memory is the largest, the randomisation curve is the image-weighted mean of
the ranks' curves (the first ``randomisation_images`` images of the case, wherever they fall),
and the per-image values are gathered in order. Every rank ends with the same rows; rank 0
prints the table and saves the files. Outside torchrun it is a plain ``famwidget evaluate``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from . import distributed


def evaluate_row(
    evaluate_run: Callable[..., dict[str, Any]],
    run: Any,
    case: Any,
    *,
    batch: int = 16,
    randomisation_images: int = 16,
    **settings: Any,
) -> dict[str, Any]:
    """One row of the evaluation table, computed by ``evaluate_run`` on this rank's shard of
    ``case`` and reduced over the ranks (alone: ``evaluate_run(run, case, ...)`` itself).

    ``case`` is a ``famwidget.evaluate.Case`` (``images`` ``(n,3,H,W)``, ``masks``
    ``(n,H,W)``, ``display`` ``(n,H,W,3)``, ``labels``), ``run`` its ``Run``; the settings are
    :func:`famwidget.evaluate.evaluate_run`'s.
    """
    w = distributed.world()
    if w.size == 1:
        return evaluate_run(
            run, case, batch=batch, randomisation_images=randomisation_images, **settings
        )
    n = len(case.images)
    batches = distributed.shard(-(-n // batch), w.rank, w.size)
    start, stop = batches.start * batch, min(batches.stop * batch, n)
    local_r = max(0, min(randomisation_images, stop) - start) if stop > start else 0
    row = None
    if stop > start:
        part = replace(
            case,
            images=case.images[start:stop],
            masks=case.masks[start:stop],
            display=case.display[start:stop],
            labels=list(case.labels[start:stop]),
        )
        row = evaluate_run(run, part, batch=batch, randomisation_images=local_r, **settings)
    return reduce_rows(w, row, n, local_r, stop - start)


def reduce_rows(
    w: distributed.World, row: dict[str, Any] | None, n: int, local_r: int, local_n: int
) -> dict[str, Any]:
    """The row of all ``n`` images from each rank's ``row`` of its ``local_n`` (``None``: no
    images on this rank) and ``local_r`` randomisation images."""
    mine = {
        "row": None if row is None else {k: v for k, v in row.items() if k != "per_image"},
        "per_image": None if row is None else row["per_image"],
        "r": local_r,
        "n": local_n,
    }
    every: list[Any] = [None] * w.size
    dist.all_gather_object(every, mine)
    filled = [e for e in every if e["row"] is not None]
    template = filled[0]["row"]
    keys = list(filled[0]["per_image"])
    # the per-image metrics: sums, sums of squares and counts (NaNs left out), all-reduced
    stats = torch.zeros(len(keys), 3, dtype=torch.float64)
    if row is not None:
        for i, key in enumerate(keys):
            v = torch.tensor(row["per_image"][key], dtype=torch.float64)
            v = v[~v.isnan()]
            stats[i] = torch.stack([v.sum(), v.square().sum(), torch.tensor(len(v))])
    seconds = torch.tensor(
        [0.0 if row is None or row["s_per_image"] is None else row["s_per_image"] * local_n],
        dtype=torch.float64,
    )
    packed = torch.cat([stats.flatten(), seconds])
    if w.backend == "nccl":
        packed = packed.to(w.device)
    dist.all_reduce(packed)
    packed = packed.cpu()
    stats, total_seconds = packed[:-1].view(len(keys), 3), float(packed[-1])
    out = dict(template)
    out["n"] = n
    for i, key in enumerate(keys):
        total, squares, count = (float(s) for s in stats[i])
        out[key] = total / count if count else math.nan
        var = (squares - total * total / count) / (count - 1) if count > 1 else 0.0
        out[f"{key}_sem"] = math.sqrt(max(var, 0.0) / count) if count > 1 else 0.0
    if template.get("s_per_image") is not None:
        out["s_per_image"] = total_seconds / n
    peaks = [e["row"]["peak_mb"] for e in filled if e["row"].get("peak_mb") is not None]
    out["peak_mb"] = max(peaks) if peaks else None
    curves = [(e["row"].get("randomisation_curve"), e["r"]) for e in filled if e["r"] > 0]
    if curves and all(c is not None for c, _ in curves):
        weight = sum(r for _, r in curves)
        layers = list(curves[0][0])
        curve = {k: sum(c[k] * r for c, r in curves) / weight for k in layers}
        out["randomisation_curve"] = curve
        out["randomisation_corr"] = float(torch.tensor(list(curve.values())).float().mean())
    out["per_image"] = {k: [v for e in filled for v in e["per_image"][k]] for k in keys}
    return out


def evaluate_main(argv: Sequence[str]) -> int:
    """``famwidget evaluate ARGS``, also under torchrun: rank 0 prints and saves, the other
    ranks compute their shards quietly (their copy of the files goes to a temporary folder)."""
    from ..evaluate import main

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return main(argv)
    w = distributed.world()
    try:
        if w.main:
            print(f"famwidget evaluate: {w.size} ranks, device {w.device}", file=sys.stderr)
            return main(argv)
        with tempfile.TemporaryDirectory() as scratch:
            args = _out_elsewhere(list(argv), scratch)
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                return main(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _out_elsewhere(argv: list[str], folder: str) -> list[str]:
    """``argv`` with ``--out`` pointing at ``folder``."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return [*argv[:i], "--out", folder, *argv[i + 2 :]]
        if arg.startswith("--out="):
            return [*argv[:i], f"--out={folder}", *argv[i + 1 :]]
    return [*argv, "--out", folder]
