"""``fw.Explorer.from_store`` / ``fw.ReIDExplorer.from_store``: the widget over a stored set.

Nothing of the store is loaded up front, whatever its size: the gallery's thumbnails are the
stored ones, read page by page as the browser asks for them (``widget/thumbnails.py``: a
gallery over 512 entries is paged), and a click reads that one entry: its picture and model
input (from ``data``, the data the store was made from, or else from its stored thumbnail,
scaled up) and, when the method, layer and target are the stored ones, its stored map, shown
with no model run (the caption says "(stored)"). Another method, layer or target is explained
live by the model, as in any Explorer. ``ReIDExplorer.from_store`` ranks the stored feature
vectors ``(N,D)`` (the only array read whole) by their cosine to the query's; a result's own map
(pair target "embedding", when the store holds ``Embedding()`` maps) is the stored one, the
query's and the similarity maps are computed live.

The widget is built over the first entry, then its gallery is replaced by the lazy one
(``_LazyInputs``, ``_LazyPictures``: an index reads one entry, a small LRU keeps the last
ones). The embedding map panel is off (it would embed every image).
"""

from __future__ import annotations

import inspect
import logging
import pathlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sources import Source, as_source
from .store import DONE, StoredExplanations, open_explanations

log = logging.getLogger(__name__)
KEEP = 32
"""Entries whose input and picture stay in memory after a click (least recently used out)."""


class _Entries:
    """The shown entries of a store, in gallery order, read one at a time on demand.

    ``order`` ``(n,)`` store indices; ``source``: the data the store was made from, or None
    (then the stored thumbnails stand in); ``undo``: the model's ``preprocess`` (``mean`` and
    ``std`` normalise a thumbnail into a model input).
    """

    def __init__(
        self,
        store: StoredExplanations,
        order: np.ndarray,
        source: Source | None,
        undo: Any,
        device: torch.device,
    ) -> None:
        self.store, self.order, self.source, self.device = store, order, source, device
        cfg = store.attrs["config"]
        self.size = tuple(int(s) for s in cfg["input_shape"][-3:])  # (3,H,W)
        self.mean = getattr(undo, "mean", 0.0)
        self.std = getattr(undo, "std", 1.0)
        self._kept: OrderedDict[int, tuple[Tensor, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()  # the screen and the worker thread read entries

    def __len__(self) -> int:
        return len(self.order)

    def entry(self, position: int) -> int:
        return int(self.order[position])

    def load(self, position: int) -> tuple[Tensor, np.ndarray]:
        """Model input ``(3,H,W)`` on the device and picture ``(H,W,3)`` uint8 of a position."""
        with self._lock:
            return self._load(position)

    def _load(self, position: int) -> tuple[Tensor, np.ndarray]:
        if position in self._kept:
            self._kept.move_to_end(position)
            return self._kept[position]
        i = self.entry(position)
        H, W = self.size[1:]
        if self.source is not None:
            x, rgb = self.source.load(i)
            picture = _picture(x, rgb, H, W)
        else:
            small = torch.from_numpy(np.asarray(self.store.thumbnails[i]))
            pic = F.interpolate(
                small.permute(2, 0, 1)[None].float() / 255, size=(H, W), mode="bilinear"
            )
            x = ((pic - self.mean) / self.std)[0]
            picture = (pic[0].permute(1, 2, 0) * 255 + 0.5).clamp(0, 255).byte().numpy()
        value = (x.to(self.device), np.ascontiguousarray(picture))
        self._kept[position] = value
        while len(self._kept) > KEEP:
            self._kept.popitem(last=False)
        return value


def _picture(x: Tensor, rgb: np.ndarray | None, H: int, W: int) -> np.ndarray:
    """What is shown for an entry: its picture at the input's size, or the input rescaled."""
    from PIL import Image

    if rgb is not None:
        rgb = np.asarray(rgb, np.uint8)
        if rgb.shape[:2] != (H, W):
            rgb = np.asarray(Image.fromarray(rgb).resize((W, H), Image.BILINEAR))
        return rgb
    scaled = x.detach().float().cpu()
    if scaled.min() < 0 or scaled.max() > 1:
        scaled = (scaled - scaled.min()) / (scaled.max() - scaled.min()).clamp_min(1e-12)
    return (scaled[:3].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


class _LazyInputs:
    """The widget's model inputs ``(n,3,H,W)``: ``[i]`` reads entry i, ``[a:b]`` a few."""

    def __init__(self, entries: _Entries) -> None:
        self.entries = entries
        self.shape = (len(entries), *entries.size)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def device(self) -> torch.device:
        return self.entries.device

    def to(self, device: Any) -> _LazyInputs:
        self.entries.device = torch.device(device)
        return self

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, slice):
            rows = range(len(self))[index]
            return torch.stack([self.entries.load(i)[0] for i in rows])
        return self.entries.load(_position(index, len(self)))[0]


class _LazyPictures:
    """The widget's shown pictures ``(n,H,W,3)`` uint8, read on demand like the inputs."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, entries: _Entries) -> None:
        self.entries = entries
        H, W = entries.size[1:]
        self.shape = (len(entries), H, W, 3)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            rows = range(len(self))[index]
            return np.stack([self.entries.load(i)[1] for i in rows])
        return self.entries.load(_position(index, len(self)))[1]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


class _StoredRows:
    """Rows ``order`` of a stored column (the thumbnails ``(N,h,w,3)``), sliced on demand."""

    ndim = 4

    def __init__(self, column: Any, order: np.ndarray) -> None:
        self.column, self.order = column, order
        self.shape = (len(order), *column.shape[1:])
        self.dtype = np.dtype(column.dtype)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            return np.asarray(self.column[self.order[index]])
        return np.asarray(self.column[int(self.order[_position(index, len(self))])])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


def _position(index: Any, n: int) -> int:
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"a gallery position is an int, not {type(index).__name__}")
    if not -n <= index < n:
        raise IndexError(f"position {index} is out of range: the gallery has {n}")
    return int(index) % n


class _StoredMaps:
    """Mixed in before Explorer / ReIDExplorer: a stored map instead of a model run."""

    _store_entries: _Entries
    _store_target: str

    def _explain_one(self, index, image, method, layer, target, stale, stream=True):
        cfg = self._store_entries.store.attrs["config"]
        is_query = image is getattr(self, "_query", None)
        same = method == cfg["method"] and layer == (cfg.get("layer") or "")
        wanted = str(target) if target is not None else self._store_target
        if not is_query and same and wanted == str(cfg.get("target") or ""):
            return self._store_entries.store[self._store_entries.entry(index)]
        return super()._explain_one(index, image, method, layer, target, stale, stream)

    def _view(self, index, rgb, explanation, caption):
        if "store" not in (explanation.options or {}):
            return super()._view(index, rgb, explanation, caption)
        payload = super()._view(index, rgb, explanation, f"{caption} (stored)")
        view = payload["view"]  # the page's caption starts with the label: say it there too
        payload["view"] = {**view, "label": f"{view['label']} (stored)", "stored": True}
        return payload


_CLASSES: dict[type, type] = {}


def _stored_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(cls.__name__, (_StoredMaps, cls), {"__module__": cls.__module__})
    return _CLASSES[cls]


def _chosen(store: StoredExplanations, path: Any, entries: Any, limit: int | None) -> np.ndarray:
    status = store.status
    if entries is None:
        chosen = np.flatnonzero(status == DONE)[:limit]
    else:
        chosen = np.asarray(entries, np.int64).reshape(-1)
        bad = [int(i) for i in chosen if not 0 <= i < len(store) or status[i] != DONE]
        if bad:
            raise ValueError(f"entries {bad[:10]} are not done entries of {str(path)!r}")
    if not len(chosen):
        raise ValueError(f"{str(path)!r} has no explained entry to browse yet")
    return chosen


def _source(store: StoredExplanations, data: Any, model: nn.Module, kwargs: dict) -> Any:
    if data is None:
        if store.thumbnails is None:
            raise ValueError(f"{str(store.path)!r} keeps no thumbnails; pass data= to browse it")
        log.warning("from_store without data=: live explanations use the stored thumbnails")
        return None
    source = as_source(data, kwargs.pop("preprocess", None) or getattr(model, "preprocess", None))
    if len(source) != len(store) or source.names != store.names:
        raise ValueError(
            f"data does not hold the store's entries (the names differ: {len(source)} entries "
            f"vs the store's {len(store)}); pass the data the store was made from"
        )
    return source


def _no_map(cls: type, kwargs: dict) -> dict:
    if "map" in inspect.signature(cls.__init__).parameters:
        kwargs.setdefault("map", False)
    return kwargs


def _install(widget: Any, entries: _Entries, captions: list[str], extra: dict) -> None:
    """Replace the widget's one-entry gallery by the lazy one over ``entries``."""
    from ..widget.thumbnails import Thumbnails

    store = entries.store
    widget._store_entries = entries
    widget._inputs = _LazyInputs(entries)
    widget._shown = _LazyPictures(entries)
    widget._captions = captions
    stored = store.thumbnails
    widget._thumbs = Thumbnails(
        _StoredRows(stored, entries.order) if stored is not None else widget._shown
    )
    thumb_bytes, info = widget._thumbs.opening()
    info["image"] = list(entries.size[1:])
    with widget.hold_sync():
        widget.thumbs = thumb_bytes
        widget.gallery = {**info, "captions": captions, "marks": [], **extra}
    widget.store_entries = [int(i) for i in entries.order]


def explorer_from_store(
    cls: type,
    path: str | pathlib.Path,
    model: nn.Module,
    data: Any = None,
    entries: Sequence[int] | None = None,
    limit: int | None = None,
    **kwargs: Any,
) -> Any:
    """An ``Explorer`` (``cls``) over the done entries of the store at ``path`` (or ``entries``,
    at most ``limit``), lazily (see the module). ``kwargs``: the Explorer's options."""
    store = open_explanations(path)
    order = _chosen(store, path, entries, limit)
    source = _source(store, data, model, kwargs)
    cfg = store.attrs["config"]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    lazy = _Entries(store, order, source, getattr(model, "preprocess", None), device)
    names = store.names
    labels = kwargs.pop("labels", None)
    captions = [str(v) for v in labels] if labels is not None else [names[i] for i in order]
    if len(captions) != len(order):
        raise ValueError(f"got {len(captions)} labels for {len(order)} entries")
    x, picture = lazy.load(0)
    target = kwargs.get("target")
    widget = _stored_class(cls)(
        model,
        x[None],
        labels=captions[:1],
        display=picture[None],
        method=kwargs.pop("method", store.method),
        layer=kwargs.pop("layer", cfg.get("layer") or None),
        **_no_map(cls, kwargs),
    )
    widget._store_target = str(cfg.get("target") or "") if target is None else str(target)
    _install(widget, lazy, captions, {})
    return widget


def reid_from_store(
    cls: type,
    path: str | pathlib.Path,
    model: nn.Module,
    query: Any,
    data: Any = None,
    query_id: Any = None,
    gallery_ids: Sequence[Any] | None = None,
    top: int | None = None,
    entries: Sequence[int] | None = None,
    output_key: Any = None,
    **kwargs: Any,
) -> Any:
    """A ``ReIDExplorer`` (``cls``): ``query`` against the stored gallery, ranked by the stored
    feature vectors (see the module). ``gallery_ids``: one per store entry (default: the stored
    labels where known)."""
    from ..tap import preserved
    from ..targets import feature_vector

    store = open_explanations(path)
    chosen = _chosen(store, path, entries, None)
    source = _source(store, data, model, kwargs)
    cfg = store.attrs["config"]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    preprocess = kwargs.get("preprocess") or getattr(model, "preprocess", None)
    q = query if isinstance(query, Tensor) else preprocess(query)
    if q.dim() != 3:
        raise ValueError(f"query must be one image (3,H,W), got shape {tuple(q.shape)}")
    with preserved(model), torch.inference_mode():
        q_feat = feature_vector(model(q[None].to(device)), output_key).float().cpu()
    g_feat = torch.from_numpy(np.asarray(store.features[chosen], np.float32))
    if g_feat.shape[1] != q_feat.shape[1]:
        raise ValueError(
            f"the store's feature vectors have {g_feat.shape[1]} values, the query's "
            f"{q_feat.shape[1]}: the store was made with another model or output"
        )
    scores = F.cosine_similarity(g_feat, q_feat, dim=1)
    rank = scores.argsort(descending=True)[: top or len(scores)]
    order = chosen[rank.numpy()]
    if gallery_ids is None:
        stored_labels = np.asarray(store.labels[:])
        gallery_ids = None if (stored_labels < 0).all() else stored_labels.tolist()
    elif len(gallery_ids) != len(store):
        raise ValueError(f"got {len(gallery_ids)} gallery ids for {len(store)} store entries")
    ids = None if gallery_ids is None else [gallery_ids[int(i)] for i in order]
    ranked = scores[rank]
    captions = [
        f"{r + 1}. {float(s):.2f}" + ("" if ids is None else f" · id {ids[r]}")
        for r, s in enumerate(ranked.tolist())
    ]
    lazy = _Entries(store, order, source, getattr(model, "preprocess", None), device)
    x, picture = lazy.load(0)
    kwargs.pop("preprocess", None)
    widget = _stored_class(cls)(
        model,
        q.cpu(),
        x[None].cpu(),
        display=picture[None],
        method=kwargs.pop("method", store.method),
        layer=kwargs.pop("layer", cfg.get("layer") or None),
        output_key=output_key,
        **kwargs,
    )
    widget._store_target = "Embedding()"  # the pair target "embedding" of a result
    widget._gallery_features = g_feat[rank].to(widget._query_feature.device)
    widget.ranking = [int(i) for i in order]
    widget.scores = ranked
    extra: dict[str, Any] = {"scores": [round(float(v), 4) for v in ranked]}
    if ids is not None and query_id is not None:
        extra["marks"] = ["match" if i == query_id else "miss" for i in ids]
    _install(widget, lazy, captions, extra)
    return widget
