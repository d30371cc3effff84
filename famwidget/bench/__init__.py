"""Benchmarks: ``python -m famwidget.bench [--only NAME] [--device D] [--quick | --smoke]``.

``--smoke`` runs every benchmark at its smallest sizes with one repeat (tiny inputs, few
images, small galleries), through the same code and printing the same tables as the full run,
in seconds: CI runs it (``tests/test_bench_quick.py``) to check that each benchmark finishes and
that its tables keep every row and column. Smoke figures mean nothing.

``--peers`` runs the side-by-side comparison with pytorch-grad-cam and TorchCAM instead
(:mod:`famwidget.bench.peers`; ``--cases``, ``--repeats``, ``--no-memory``, ``--out``).

Each name in :data:`BENCHMARKS` is a module ``famwidget.bench.<name>`` with a function
``run(args) -> None`` that prints a small table; names whose module does not exist yet are
skipped. To add one, write the module and put its name in the list. Shared helpers for timing
and printing live here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence

import torch

BENCHMARKS = ["scorefam", "fixations", "widget", "embedding", "scorefam_budget", "memory"]


def available() -> list[str]:
    """The benchmark names whose module exists."""
    return [n for n in BENCHMARKS if importlib.util.find_spec(f"{__name__}.{n}") is not None]


def parser() -> argparse.ArgumentParser:
    """The command line shared by every benchmark (``famwidget bench`` uses it too)."""
    p = argparse.ArgumentParser(
        prog="famwidget bench", description="famwidget benchmarks (scripts, not tests)"
    )
    p.add_argument("--only", choices=BENCHMARKS, help="run this benchmark only")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if any)")
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats (~2 min on CPU)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="smallest sizes, one repeat: checks that it runs (seconds; the figures mean nothing)",
    )
    peers = p.add_argument_group("--peers: famwidget beside pytorch-grad-cam and TorchCAM")
    peers.add_argument("--peers", action="store_true", help="run the peer comparison only")
    peers.add_argument(
        "--cases", help="comma-separated METHOD/MODEL/bBATCH, e.g. score-fam/resnet18/b1"
    )
    peers.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3)")
    peers.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    peers.add_argument("--out", default="bench-output", help="where peers.md/.json go")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.command_line = " ".join(["famwidget bench", *argv])
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke and args.quick:
        raise SystemExit("--smoke and --quick exclude each other: choose one")
    if args.smoke and args.peers:
        raise SystemExit("--smoke runs the benchmarks of --only; --peers has --quick instead")
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    if args.peers:
        print(f"== peers ({args.device}{mode(args)}) ==", flush=True)
        importlib.import_module(f"{__name__}.peers").run(args)
        return 0
    names = [args.only] if args.only else available()
    for name in names:
        if name not in available():
            print(f"benchmark {name!r} is not written yet (no module famwidget.bench.{name})")
            continue
        print(f"== {name} ({args.device}{mode(args)}) ==", flush=True)
        importlib.import_module(f"{__name__}.{name}").run(args)
    return 0


def mode(args: argparse.Namespace) -> str:
    """``", quick"``, ``", smoke"`` or ``""``: the size a run was asked for, for its heading."""
    return ", smoke" if getattr(args, "smoke", False) else ", quick" if args.quick else ""


def smoke(args: object) -> bool:
    """Whether ``args`` asks for the smoke sizes (``--smoke``; absent counts as no)."""
    return bool(getattr(args, "smoke", False))


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device | str) -> float:
    """Wall-clock seconds of one call of ``fn``, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain, aligned text table (floats with 3 significant digits)."""

    def cell(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in text:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    print(flush=True)
