"""``famwidget explain``: a dataset explained into a store, alone or under ``torchrun``.

famwidget explain --model zoo:flower_net --data flowers:200 --method grad-cam --out f.zarr
torchrun --nproc-per-node 2 -m famwidget explain --model ... --out f.zarr
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="famwidget explain", description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        required=True,
        help="zoo:NAME, torchvision:NAME (random weights) or package.module:factory",
    )
    p.add_argument("--weights", default=None, help=".safetensors or torch state dict (no pickle)")
    p.add_argument(
        "--data",
        required=True,
        help="flowers:N, flowers-double:N, persons:N, a folder, or a .pt tensor file",
    )
    p.add_argument("--method", default="grad-fam")
    p.add_argument("--layer", default=None)
    p.add_argument("--target", default=None, help="embedding, predicted, class:C, dimension:D")
    p.add_argument("--out", required=True, help="the Zarr store (resumed if it exists)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=64, help="entries per stored chunk")
    p.add_argument("--heatmap-dtype", choices=("uint8", "float16"), default="uint8")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16")
    p.add_argument("--on-error", choices=("skip", "stop"), default="skip")
    p.add_argument(
        "--no-size-check",
        action="store_true",
        help="accept files of any pixel size (the preprocess resizes)",
    )
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import torch.distributed as dist

    from . import distributed
    from .runner import explain_dataset
    from .sources import EntryError
    from .specs import load_data, load_model, parse_target

    try:
        world = distributed.world()
        model, note = load_model(args.model, args.weights)
        model = model.to(world.device)
        if world.main:
            print(
                f"model: {note}; {world.size} process(es), device {world.device}", file=sys.stderr
            )
        explain_dataset(
            model,
            load_data(args.data),
            args.method,
            args.layer,
            parse_target(args.target),
            out=args.out,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            heatmap_dtype=args.heatmap_dtype,
            precision=args.precision,
            on_error=args.on_error,
            check_size=not args.no_size_check,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            model_name=args.model,
        )
    except EntryError as e:
        print(
            f"famwidget explain: stopped at {e.name}: {e.reason} (--on-error skip records "
            "bad entries and goes on)",
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        print(f"famwidget explain: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
