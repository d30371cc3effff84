"""The explanation store: a Zarr (v3) group with one row per entry, written chunk by chunk.

Layout of ``PATH`` (N entries, chunks of C entries, images H x W, features D, channels K):

=============  ======================  ====================================================
array          shape, dtype            what
=============  ======================  ====================================================
heatmaps       (N,H,W) uint8|float16   the map in [0,1] (uint8: x255)
features       (N,D) float32           the model's feature vector (a classifier's logits)
weights        (N,K) float32           the channel weights, where the method has them
top_channels   (N,T) int32             the T channels of largest weight, where it has them
scores         (N,) float32            the target's value on the clean image
labels         (N,) int64              the entry's label, -1 where unknown
thumbnails     (N,h,w,3) uint8         a small picture of the entry, for browsing
names          (N,) str                the file name (relative path) or the index
errors         (N,) str                why an entry failed ("" otherwise)
status         (N,) uint8              0 missing, 1 done, 2 failed: written LAST per chunk
=============  ======================  ====================================================

The group's attributes hold ``famwidget``: the ``config`` a rerun must match, the
``manifest`` (versions, model, method, options, date) and, once every rank finished,
``complete`` and a ``summary``. Every array is chunked by C entries along its first axis, so a
chunk of entries is one file per array; a writer fills a chunk's data arrays first and its
``status`` last (each file is written to a temporary name and renamed, by Zarr), so a chunk
killed half way is never marked done and is redone by the next run; :class:`StoredExplanations`
reads a row as data only when its status says done.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..explanation import Explanation

MISSING, DONE, FAILED = 0, 1, 2
FORMAT = 1
HEATMAP_DTYPES = ("uint8", "float16")
DATA_ARRAYS = (
    "heatmaps",
    "features",
    "weights",
    "top_channels",
    "scores",
    "labels",
    "thumbnails",
    "errors",
)


@dataclass(frozen=True)
class Shapes:
    """What the arrays need: N entries, chunk C, map H x W, D features, K channels, thumb h x w."""

    n: int
    chunk: int
    height: int
    width: int
    features: int
    channels: int | None
    top: int
    thumb: tuple[int, int] | None
    heatmap_dtype: str = "uint8"


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise ImportError(
            "the explanation store needs the zarr package (v3): pip install 'famwidget[zarr]'"
        ) from None
    return zarr


def create(path: str | pathlib.Path, shapes: Shapes, names: list[str], attrs: dict) -> Any:
    """A new store at ``path`` with every array allocated (no data yet); returns the group."""
    zarr = _zarr()
    s = shapes
    if s.heatmap_dtype not in HEATMAP_DTYPES:
        raise ValueError(f"heatmap dtype must be one of {HEATMAP_DTYPES}, not {s.heatmap_dtype!r}")
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    c = s.chunk

    def array(name: str, shape: tuple, dtype: Any, fill: Any) -> None:
        g.create_array(name, shape=shape, chunks=(c, *shape[1:]), dtype=dtype, fill_value=fill)

    array("heatmaps", (s.n, s.height, s.width), s.heatmap_dtype, 0)
    array("features", (s.n, s.features), "float32", np.nan)
    if s.channels:
        array("weights", (s.n, s.channels), "float32", np.nan)
        array("top_channels", (s.n, s.top), "int32", -1)
    array("scores", (s.n,), "float32", np.nan)
    array("labels", (s.n,), "int64", -1)
    if s.thumb:
        array("thumbnails", (s.n, *s.thumb, 3), "uint8", 0)
    array("names", (s.n,), str, "")
    array("errors", (s.n,), str, "")
    array("status", (s.n,), "uint8", MISSING)
    if s.n:
        g["names"][:] = np.array(names, dtype=object)
    g.attrs["famwidget"] = {"format": FORMAT, "complete": False, **attrs}
    return g


def open_group(path: str | pathlib.Path, mode: str = "r") -> Any:
    """The Zarr group of an existing store; a clear error when ``path`` is not one."""
    zarr = _zarr()
    p = pathlib.Path(path)
    if not (p / "zarr.json").exists():
        raise FileNotFoundError(f"{str(p)!r} is not an explanation store (no zarr.json in it)")
    g = zarr.open_group(str(p), mode=mode, zarr_format=3)
    if "famwidget" not in g.attrs or "status" not in g:
        raise ValueError(f"{str(p)!r} is a Zarr group but not a famwidget explanation store")
    return g


def write_chunk(g: Any, start: int, rows: dict[str, np.ndarray], status: np.ndarray) -> None:
    """Write entries ``start..start+len(status)`` (one chunk): data first, ``status`` last."""
    stop = start + len(status)
    for name in DATA_ARRAYS:
        if name in rows and name in g:
            g[name][start:stop] = rows[name]
    g["status"][start:stop] = status


class LazyColumn:
    """One stored array, read only where asked; rows that are not done read as the fill value.

    ``column[i]``, ``column[a:b]``, ``column[[i, j]]`` and ``np.asarray(column)``; ``.shape``
    and ``.dtype`` without reading anything.
    """

    def __init__(self, array: Any, status: Any) -> None:
        self.array = array
        self.status = status
        self.shape = tuple(array.shape)
        self.dtype = array.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        rows, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        fill = self.array.fill_value
        if isinstance(rows, (int, np.integer)):
            values = np.array(self.array[int(rows)])
            if int(self.status[int(rows)]) != DONE:
                values[...] = fill
            return values[rest] if rest else values
        if isinstance(rows, slice):
            values = np.array(self.array[rows])
            done = np.asarray(self.status[rows]) == DONE
        else:
            rows = np.asarray(rows)
            rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
            values = np.array(self.array.oindex[rows])
            done = np.asarray(self.status.oindex[rows]) == DONE
        values[~done] = fill
        return values[(slice(None), *rest)] if rest else values

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyColumn(shape={self.shape}, dtype={self.dtype})"


class StoredExplanations:
    """A store opened for reading (``fw.open_explanations(PATH)``); nothing is loaded up front.

    ``.heatmaps`` ``(N,H,W)``, ``.features`` ``(N,D)``, ``.weights`` ``(N,K)``, ``.scores``
    ``(N,)``, ``.labels``, ``.thumbnails``: :class:`LazyColumn`; ``.names``, ``.status``,
    ``.errors``: lists / arrays read once; ``len()``; ``store[i]`` → a one-image Explanation
    (an error if entry i is not done); ``.table()`` → one dict per entry.
    """

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self.group = open_group(self.path, "r")
        self.attrs: dict = dict(self.group.attrs["famwidget"])
        self._status = self.group["status"]

    def _column(self, name: str) -> LazyColumn | None:
        return LazyColumn(self.group[name], self._status) if name in self.group else None

    heatmaps = property(lambda self: self._column("heatmaps"))
    features = property(lambda self: self._column("features"))
    weights = property(lambda self: self._column("weights"))
    top_channels = property(lambda self: self._column("top_channels"))
    scores = property(lambda self: self._column("scores"))
    labels = property(lambda self: self._column("labels"))
    thumbnails = property(lambda self: self._column("thumbnails"))

    @property
    def names(self) -> list[str]:
        return [str(s) for s in self.group["names"][:]]

    @property
    def status(self) -> np.ndarray:
        """``(N,)`` uint8: 0 missing, 1 done, 2 failed."""
        return np.asarray(self._status[:])

    @property
    def errors(self) -> dict[str, str]:
        """``{name: why}`` for every failed entry."""
        failed = np.flatnonzero(self.status == FAILED)
        if not len(failed):
            return {}
        names, errors = self.group["names"], self.group["errors"]
        return {str(names[int(i)]): str(errors[int(i)]) for i in failed}

    @property
    def complete(self) -> bool:
        """True once a run finished every entry (done or failed) and wrote its summary."""
        return bool(self.attrs.get("complete")) and not (self.status == MISSING).any()

    @property
    def manifest(self) -> dict:
        return dict(self.attrs.get("manifest", {}))

    @property
    def method(self) -> str:
        return str(self.attrs["config"]["method"])

    def __len__(self) -> int:
        return int(self._status.shape[0])

    def heatmap_scale(self) -> float:
        """What a stored heatmap value is divided by to be in [0,1]."""
        return 255.0 if self.group["heatmaps"].dtype == np.uint8 else 1.0

    def __getitem__(self, i: int) -> Explanation:
        n = len(self)
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(f"entry {i!r} is not an index in a store of {n} entries")
        i = int(i) % n
        state = int(self._status[i])
        name = str(self.group["names"][i])
        if state == FAILED:
            raise ValueError(f"entry {i} ({name}) failed: {self.group['errors'][i]}")
        if state != DONE:
            raise ValueError(
                f"entry {i} ({name}) is not explained yet; run explain_dataset again to finish"
            )
        g, cfg = self.group, self.attrs["config"]
        heat = torch.from_numpy(np.asarray(g["heatmaps"][i], np.float32) / self.heatmap_scale())
        weights = torch.from_numpy(np.asarray(g["weights"][i : i + 1])) if "weights" in g else None
        return Explanation(
            heatmap=heat[None],
            method=cfg["method"],
            layer=str(cfg.get("layer") or ""),
            target=str(cfg.get("target") or ""),
            weights=weights,
            scores=torch.from_numpy(np.asarray(g["scores"][i : i + 1])),
            options={"store": str(self.path), "entry": i, "name": name},
        )

    def table(self) -> list[dict[str, Any]]:
        """One row per entry: index, name, label, status, score, error."""
        state = self.status
        labels = np.asarray(self.group["labels"][:])
        scores = np.asarray(self.group["scores"][:])
        errors = self.group["errors"][:]
        words = {MISSING: "missing", DONE: "done", FAILED: "failed"}
        return [
            {
                "index": i,
                "name": name,
                "label": int(labels[i]),
                "status": words[int(state[i])],
                "score": float(scores[i]) if state[i] == DONE else float("nan"),
                "error": str(errors[i]),
            }
            for i, name in enumerate(self.names)
        ]

    def __repr__(self) -> str:
        s = self.status
        return (
            f"StoredExplanations({str(self.path)!r}, {len(self)} entries: {int((s == DONE).sum())}"
            f" done, {int((s == FAILED).sum())} failed, {int((s == MISSING).sum())} missing; "
            f"method {self.method})"
        )


def open_explanations(path: str | pathlib.Path) -> StoredExplanations:
    """Open the store that ``explain_dataset`` wrote at ``path``, lazily (see the class)."""
    return StoredExplanations(path)
