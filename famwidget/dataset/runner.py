"""``fw.explain_dataset``: explain every entry of a dataset into a resumable Zarr store.

The work is cut into chunks of ``chunk_size`` entries (the store's chunks). Each chunk is read,
explained in batches of ``batch_size`` with ``fw.explain`` (the same methods and options), and
written whole; its ``status`` last (see ``famwidget.dataset.store``). A rerun with the same
``out`` skips every chunk already written and does only the rest, so a killed run (SIGTERM or
SIGKILL) loses at most the chunks it was writing. Under ``torchrun`` each rank takes its own
contiguous block of chunks (``distributed.shard``): no entry is done twice, no padding, and two
ranks never write the same file; rank 0 creates the store first and writes the summary last.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import pathlib
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed, store
from .progress import Progress
from .sources import EntryError, Source, TensorSource, as_source

ON_ERROR = ("skip", "stop")
_DEFAULTS = {"precision": "auto", "output_key": None}  # fw.explain's: not recorded as asked


def explain_dataset(
    model: nn.Module,
    data: Any,
    method: str = "grad-fam",
    layer: str | None = None,
    target: Any = None,
    *,
    out: str | pathlib.Path,
    batch_size: int = 32,
    chunk_size: int = 64,
    heatmap_dtype: str = "uint8",
    preprocess: Callable[[Any], Tensor] | None = None,
    check_size: bool = True,
    on_error: str = "skip",
    progress: bool = True,
    overwrite: bool = False,
    thumbnail: int = 64,
    top_channels: int = 8,
    model_name: str | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> store.StoredExplanations:
    """Explain every entry of ``data`` with ``method`` and store the results at ``out``.

    Args:
        model: any ``nn.Module``, on the device to run on; it comes back as it went in.
        data: a float tensor ``(N,3,H,W)``, a uint8 array ``(N,H,W,3)`` or ``fw.data`` set, a
            map-style ``Dataset`` / ``DataLoader`` yielding images or ``(image, label)``, or a
            folder of image files (see ``famwidget.dataset.sources``).
        method, layer, target, **options: as for ``fw.explain`` (``output_key=``,
            ``precision=``, the method's own options).
        out: the store's folder (Zarr v3). If it exists, the run resumes it (same options
            required) unless ``overwrite=True``.
        batch_size: images per ``fw.explain`` call. chunk_size: entries per stored chunk,
            the unit of work that a rerun skips or redoes.
        heatmap_dtype: "uint8" (x255, 1/255 resolution) or "float16".
        preprocess: PIL / ``(H,W,3)`` uint8 → ``(3,H,W)`` float for pictures and files;
            default the model's ``.preprocess`` (the zoo models have one), else x/255.
        check_size: files must all have the pixel size of the first one (else a bad entry).
        on_error: "skip" records a bad entry (unreadable, wrong size, failed) as failed with
            its reason and goes on; "stop" raises ``EntryError`` naming it.
        progress: a bar with the rate and the time left (rank 0 only under torchrun).
        thumbnail: the longest side of the stored thumbnails (0: none).
        top_channels: how many of the largest-weight channels to keep per entry.
        model_name: recorded in the manifest (default ``model.info["name"]`` or the class).
        log: where the run's lines go (default: stderr, rank 0 only).

    Returns:
        ``StoredExplanations`` over ``out`` (``fw.open_explanations(out)``).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if heatmap_dtype not in store.HEATMAP_DTYPES:
        raise ValueError(f"heatmap_dtype must be one of {store.HEATMAP_DTYPES}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    world = distributed.world()
    say = log or (_stderr if world.main else (lambda line: None))
    prefix = f"rank {world.rank}/{world.size}: " if world.size > 1 else ""
    source = as_source(data, preprocess or getattr(model, "preprocess", None), check_size)
    n = len(source)
    if n == 0:
        raise ValueError("data has no entries")
    request = {
        "method": method,
        "layer_arg": None if layer is None else str(layer),
        "target_arg": _describe(target),
        "options": {
            k: _describe(v) for k, v in sorted(options.items()) if _DEFAULTS.get(k, ...) != v
        },
        "n": n,
        "names_sha1": hashlib.sha1("\n".join(source.names).encode()).hexdigest(),
        "chunk": chunk_size,
        "heatmap_dtype": heatmap_dtype,
    }
    path = pathlib.Path(out)
    run = _Run(model, source, method, layer, target, options, on_error, top_channels)
    run.batch_size = batch_size
    if world.main:
        if overwrite or not (path / "zarr.json").exists():
            _create(run, path, request, heatmap_dtype, thumbnail, model_name, world, say)
        else:
            _check_resume(path, request)
    distributed.barrier(world)
    g = store.open_group(path, "r+")
    run.bind(g)

    n_chunks = math.ceil(n / chunk_size)
    mine = distributed.shard(n_chunks, world.rank, world.size)
    status = np.asarray(g["status"][:])
    spans = [(c * chunk_size, min(n, (c + 1) * chunk_size)) for c in mine]
    todo = [(a, b) for a, b in spans if (status[a:b] == store.MISSING).any()]
    mine_n = sum(b - a for a, b in spans)
    todo_n = sum(b - a for a, b in todo)
    if todo_n < mine_n:
        say(
            f"{prefix}resuming {path}: {mine_n - todo_n} of {mine_n} entries already done, "
            f"{todo_n} to go"
        )
    start = time.perf_counter()
    bar = Progress(
        mine_n, initial=mine_n - todo_n, desc=f"{prefix}{method}", enabled=progress and world.main
    )
    done = failed = 0
    try:
        for a, b in todo:
            rows, state = run.chunk(a, b)
            store.write_chunk(g, a, rows, state)
            done += int((state == store.DONE).sum())
            failed += int((state == store.FAILED).sum())
            for name, why in run.last_failures:
                say(f"{prefix}skipped {name}: {why}")
            bar.update(b - a)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    distributed.barrier(world)
    total_done, total_failed, total_new = distributed.sum_all(world, [done, failed, todo_n])
    slowest = distributed.max_all(world, seconds)
    if world.main:
        _finish(path, int(total_done), int(total_failed), int(total_new), slowest, world, say)
    distributed.barrier(world)
    if todo_n and not total_done:
        raise RuntimeError(f"no entry could be explained; see the errors in {path}")
    return store.open_explanations(path)


class _Run:
    """One rank's work: load a chunk's entries, explain them in batches, build its rows."""

    def __init__(self, model, source: Source, method, layer, target, options, on_error, top):
        self.model, self.source, self.method = model, source, method
        self.layer, self.target, self.options = layer, target, options
        self.on_error, self.top = on_error, top
        self.input_shape: tuple[int, ...] | None = None
        self.thumb: tuple[int, int] | None = None
        self.last_failures: list[tuple[str, str]] = []
        self.batch_size = 32

    def bind(self, g: Any) -> None:
        cfg = g.attrs["famwidget"]["config"]
        self.input_shape = tuple(cfg["input_shape"])
        self.thumb = tuple(g["thumbnails"].shape[1:3]) if "thumbnails" in g else None
        self.heatmap_dtype = str(g["heatmaps"].dtype)
        self.has_weights = "weights" in g
        self.top = g["top_channels"].shape[1] if self.has_weights else 0
        self.feature_dim = int(g["features"].shape[1])
        self.channels = int(g["weights"].shape[1]) if self.has_weights else 0

    def explain(self, x: Tensor) -> tuple[Any, Tensor]:
        """``fw.explain`` of ``x`` ``(B,3,H,W)`` and the model's feature vectors ``(B,D)``."""
        from ..api import explain
        from ..tap import preserved
        from ..targets import feature_vector

        device = _device(self.model)
        exp = explain(self.model, x, self.method, self.layer, self.target, **self.options)
        with preserved(self.model), torch.no_grad():
            out = self.model(x.to(device))
        features = feature_vector(out, self.options.get("output_key")).detach().float().cpu()
        return exp, features

    def load(self, i: int) -> tuple[Tensor, np.ndarray | None]:
        x, rgb = self.source.load(i)
        if self.input_shape is not None and tuple(x.shape) != self.input_shape:
            raise EntryError(
                self.source.names[i],
                f"has shape {tuple(x.shape)} after preprocessing; the others have "
                f"{self.input_shape}",
            )
        return x, rgb

    def fail(self, i: int, why: str) -> None:
        if self.on_error == "stop":
            raise EntryError(self.source.names[i], why)
        self.last_failures.append((self.source.names[i], why))

    def chunk(self, a: int, b: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Rows ``a..b`` of every stored array and their status."""
        self.last_failures = []
        m = b - a
        rows = _empty_rows(m, self)
        self._last: list = []
        state = np.full(m, store.FAILED, np.uint8)
        good: list[tuple[int, Tensor, np.ndarray | None]] = []
        explain_errors: list[str] = []
        for i in range(a, b):
            try:
                x, rgb = self.load(i)
            except EntryError as e:
                self.fail(i, e.reason)
                rows["errors"][i - a] = e.reason
                continue
            good.append((i, x, rgb))
        for s in range(0, len(good), self.batch_size):
            batch = good[s : s + self.batch_size]
            self._last = self._explain_batch(batch)
            for (i, x, rgb), result in zip(batch, self._last, strict=True):
                if isinstance(result, str):
                    self.fail(i, result)
                    rows["errors"][i - a] = result
                    continue
                why = self._fill(rows, i - a, x, rgb, *result)
                if why:
                    self.fail(i, why)
                    rows["errors"][i - a] = why
                    continue
                state[i - a] = store.DONE
            explain_errors.extend(r for r in self._last if isinstance(r, str))
        if good and explain_errors and not (state == store.DONE).any():
            raise RuntimeError(
                f"explaining failed for every image of entries {a}..{b - 1}, so the cause is "
                f"not one bad entry: {explain_errors[0]}"
            )
        rows["labels"] = self.source.labels[a:b].copy()
        return rows, state

    def _explain_batch(self, batch: list) -> list:
        x = torch.stack([t for _, t, _ in batch])
        try:
            exp, feats = self.explain(x)
            return [(exp, b, feats[b]) for b in range(len(batch))]
        except Exception:
            if len(batch) == 1:
                return [self._explain_alone(x)]
            return [self._explain_alone(x[b : b + 1]) for b in range(len(batch))]

    def _explain_alone(self, x: Tensor) -> Any:
        try:
            exp, feats = self.explain(x)
        except Exception as e:
            return f"explaining it failed ({type(e).__name__}: {e})"
        return exp, 0, feats[0]

    def _fill(self, rows, r, x, rgb, exp, b, feats) -> str | None:
        """Row ``r`` from image ``b`` of ``exp``; returns why it failed, or None."""
        heat = exp.heatmap[b].detach().float().cpu().numpy()
        if not np.isfinite(heat).all():
            return "its map is not finite (NaN or inf)"
        heat = np.clip(heat, 0, 1)
        rows["heatmaps"][r] = (
            np.round(heat * 255).astype(np.uint8) if self.heatmap_dtype == "uint8" else heat
        )
        rows["features"][r] = feats.numpy()
        if self.has_weights and exp.weights is not None:
            w = exp.weights[b].detach().float().cpu()
            rows["weights"][r] = w.numpy()
            k = min(self.top, w.numel())
            rows["top_channels"][r, :k] = torch.topk(w, k).indices.numpy()
        if exp.scores is not None:
            rows["scores"][r] = float(exp.scores[b])
        reasons = getattr(exp, "degenerate_images", None)
        if reasons and reasons[b]:
            rows["errors"][r] = f"degenerate map: {reasons[b]}"
        if self.thumb:
            rows["thumbnails"][r] = _thumbnail(x, rgb, self.thumb, self.model)
        return None


def _empty_rows(m: int, run: _Run) -> dict[str, np.ndarray]:
    h, w = run.input_shape[1:]
    rows: dict[str, np.ndarray] = {
        "heatmaps": np.zeros((m, h, w), run.heatmap_dtype),
        "scores": np.full(m, np.nan, np.float32),
        "features": np.full((m, run.feature_dim), np.nan, np.float32),
        "errors": np.array([""] * m, dtype=object),
    }
    if run.has_weights:
        rows["weights"] = np.full((m, run.channels), np.nan, np.float32)
        rows["top_channels"] = np.full((m, run.top), -1, np.int32)
    if run.thumb:
        rows["thumbnails"] = np.zeros((m, *run.thumb, 3), np.uint8)
    return rows


def _create(run, path, request, heatmap_dtype, thumbnail, model_name, world, say) -> None:
    """Probe the first readable entry for the shapes, then allocate the store."""
    source = run.source
    first, x, errors = None, None, []
    for i in range(len(source)):
        try:
            x, _ = source.load(i)
            first = i
            break
        except EntryError as e:
            errors.append(str(e))
            if len(errors) >= 20:
                break
    if first is None:
        raise ValueError(f"none of the first entries could be read; e.g. {errors[0]}")
    exp, feats = run.explain(x[None])
    h, w = exp.heatmap.shape[-2:]
    channels = None if exp.weights is None else int(exp.weights.shape[1])
    thumb = _thumb_size(x.shape[-2:], thumbnail) if thumbnail else None
    shapes = store.Shapes(
        n=len(source),
        chunk=request["chunk"],
        height=int(h),
        width=int(w),
        features=int(feats.shape[1]),
        channels=channels,
        top=min(run.top, channels or 0) or 1,
        thumb=thumb,
        heatmap_dtype=heatmap_dtype,
    )
    config = {
        **request,
        "layer": exp.layer,
        "target": exp.target,
        "input_shape": list(x.shape),
        "batch_size": run.batch_size,
    }
    from .. import __version__

    info = getattr(run.model, "info", None)
    manifest = {
        "famwidget": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "model": model_name or (info or {}).get("name") or type(run.model).__name__,
        "model_info": _jsonable(info) if info else None,
        "method": exp.method,
        "layer": exp.layer,
        "target": exp.target,
        "options": request["options"],
        "data": {"kind": source.kind, "entries": len(source)},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "world_size": world.size,
    }
    store.create(path, shapes, source.names, {"config": config, "manifest": manifest})
    say(
        f"created {path}: {len(source)} entries in chunks of {request['chunk']}, "
        f"{exp.method} at {exp.layer or 'the whole network'}"
    )


def _check_resume(path: pathlib.Path, request: dict) -> None:
    g = store.open_group(path, "r")
    old = g.attrs["famwidget"]["config"]
    diff = [k for k in request if old.get(k) != request[k]]
    if diff:
        what = "; ".join(f"{k}: stored {old.get(k)!r}, asked {request[k]!r}" for k in diff)
        raise ValueError(
            f"the store at {str(path)!r} was made with other settings ({what}); resume it with "
            "the same ones, choose another out=, or pass overwrite=True (--overwrite)"
        )


def _finish(path, done, failed, new, seconds, world, say) -> None:
    g = store.open_group(path, "r+")
    status = np.asarray(g["status"][:])
    attrs = dict(g.attrs["famwidget"])
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    missing = int((status == store.MISSING).sum())
    attrs["complete"] = missing == 0
    attrs["summary"] = {
        "entries": int(status.size),
        "done": int((status == store.DONE).sum()),
        "failed": int((status == store.FAILED).sum()),
        "missing": missing,
        "explained_this_run": new,
        "seconds_this_run": round(seconds, 3),
        "images_per_second": round(new / seconds, 2) if seconds > 0 else None,
        "world_size": world.size,
        "store_bytes": size,
        "bytes_per_entry": round(size / max(1, status.size), 1),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    g.attrs["famwidget"] = attrs
    rate = f", {new / seconds:.1f} images/s" if seconds > 0 and new else ""
    say(
        f"explained {new} entries in {seconds:.1f} s{rate} on {world.size} process(es); "
        f"store: {int((status == store.DONE).sum())} done, {int((status == store.FAILED).sum())}"
        f" failed, {missing} missing, {size / max(1, status.size) / 1024:.1f} KiB per entry"
    )


def _thumb_size(hw: Any, longest: int) -> tuple[int, int]:
    h, w = int(hw[0]), int(hw[1])
    scale = min(1.0, longest / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _thumbnail(x: Tensor, rgb: np.ndarray | None, size: tuple[int, int], model) -> np.ndarray:
    """A ``(h,w,3)`` uint8 thumbnail: from the picture, else the model's ``preprocess.undo``,
    else the image min-max scaled."""
    if rgb is None:
        undo = getattr(getattr(model, "preprocess", None), "undo", None)
        if undo is not None:
            rgb = undo(x[None])[0]
        else:
            t = x.detach().float().cpu()
            t = (t - t.min()) / (t.max() - t.min()).clamp_min(1e-12)
            rgb = (t.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    if rgb.shape[:2] == tuple(size):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))


def _device(model: nn.Module) -> torch.device:
    from ..inputs import model_device

    return model_device(model)


def _describe(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except TypeError:
        return _describe(value)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["ON_ERROR", "EntryError", "TensorSource", "explain_dataset"]
