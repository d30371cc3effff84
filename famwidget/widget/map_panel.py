"""The embedding map panel of the Explorers: the feature space on screen, selection, neighbours.

A mixin of :class:`famwidget.widget.explorer.Explorer` (so ``fw.Explorer(..., map=True)``,
``fw.ReIDExplorer`` and ``fw.EmbeddingExplorer`` all have it). The features come from
:mod:`famwidget.embedding`; the browser gets ONE binary buffer ``map_points`` (layout in
:func:`encode_map`) and a small ``map_info`` dict, and draws it in ``js/map.js``.

- ``selection``: a list of image indices, set by a box selection in the browser or from Python,
  observable with ``observe``; highlighted in the map and the gallery.
- ``neighbours``: ``{"of": i, "indices": [...], "scores": [...]}``, the top-k cosine
  neighbours of the image on screen (small sets also carry the whole table in ``map_points``,
  so that exported pages list neighbours with no kernel).
- :meth:`MapPanel.explain_pair` (a click on a neighbour): ``Similarity`` both ways, side by side.
"""

from __future__ import annotations

import contextlib
import logging
import traceback as tb
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch
import torch.nn.functional as F
import traitlets as t
from torch import Tensor

from .. import embedding
from ..explanation import Explanation
from ..inputs import has_classes
from ..targets import Similarity
from . import wire
from .worker import Stale

log = logging.getLogger("famwidget.widget")

#: the map is on by default for embedding models with at least this many images
MAP_MIN_IMAGES = 20
#: the whole neighbour table travels with the map while the buffer stays under this size
TABLE_BYTES = 600_000
#: at most this many label groups get their own colour ("label" colouring)
MAX_GROUPS = 64
#: pages embed the pair explanations of every image's neighbours up to this many images
PAGE_PAIR_IMAGES = 200


def encode_map(
    coords: Tensor,
    groups: Tensor | None = None,
    scores: Tensor | None = None,
    table: tuple[Tensor, Tensor] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The map's one buffer: ``xy`` float32 ``(N,2)``, then (when ``table``) the neighbour
    indices uint32 ``(N,k)`` and similarities float32 ``(N,k)``, then the group of each point
    uint16 ``(N,)``, then its score quantised to uint8 ``(N,)`` (``lo + byte/255*(hi-lo)``);
    all little-endian, each block starting where the one before ends (aligned: 8N, 8Nk, 2N).

    Returns the bytes and ``{n, k, bounds: [xmin, xmax, ymin, ymax], score_range: [lo, hi]}``.
    """
    xy = coords.detach().float().cpu()
    if xy.dim() != 2 or xy.shape[1] != 2:
        raise ValueError(f"map coordinates must be (N,2), got {tuple(xy.shape)}")
    n = len(xy)
    g = torch.zeros(n, dtype=torch.int64) if groups is None else groups.detach().cpu().long()
    if len(g) != n or (n and (g.min() < 0 or g.max() > 65535)):
        raise ValueError("map groups must be N integers in 0..65535")
    s = torch.zeros(n) if scores is None else scores.detach().float().cpu()
    lo, hi = (float(s.min()), float(s.max())) if n else (0.0, 0.0)
    q = ((s - lo) / max(hi - lo, 1e-12) * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    parts = [xy.numpy().astype("<f4").tobytes()]
    k = 0
    if table is not None:
        idx, sim = table
        k = int(idx.shape[1])
        parts += [
            idx.detach().cpu().numpy().astype("<u4").tobytes(),
            sim.detach().float().cpu().numpy().astype("<f4").tobytes(),
        ]
    parts += [g.numpy().astype("<u2").tobytes(), q.numpy().tobytes()]
    bounds = [0.0, 0.0, 0.0, 0.0]
    if n:
        bounds = [float(xy[:, 0].min()), float(xy[:, 0].max())]
        bounds += [float(xy[:, 1].min()), float(xy[:, 1].max())]
    info = {"n": n, "k": k, "bounds": bounds, "score_range": [lo, hi]}
    return b"".join(parts), info


class MapPanel(t.HasTraits):
    """The map's traits and behaviour; mixed into :class:`Explorer` (which calls
    :meth:`_map_setup` at the end of its ``__init__``)."""

    selection = t.List(t.Int()).tag(sync=True)
    map_points = t.Bytes(b"").tag(sync=True)
    map_info = t.Dict().tag(sync=True)
    neighbours = t.Dict().tag(sync=True)
    pair = t.Dict().tag(sync=True)
    pair_image = t.Bytes(b"").tag(sync=True)
    pair_heatmap = t.Bytes(b"").tag(sync=True)

    _map_features: Tensor | None = None

    @t.validate("selection")
    def _valid_selection(self, proposal: dict) -> list[int]:
        n = len(getattr(self, "_inputs", ()))
        values = list(proposal["value"])
        bad = [v for v in values if isinstance(v, bool) or not 0 <= int(v) < n]
        if bad:
            raise t.TraitError(
                f"selection holds {bad[:5]}: indices of images must lie in 0..{n - 1}"
            )
        return list(dict.fromkeys(int(v) for v in values))  # each index once, order kept

    # -- setting the map up -------------------------------------------------------------------

    def _map_setup(
        self,
        enabled: bool | None,
        features: Tensor | None = None,
        groups: list[Any] | None = None,
        group_name: str = "label",
        scores: Tensor | None = None,
        score_name: str = "feature norm",
        projection: str = "pca",
        k: int = 5,
        **projection_options: Any,
    ) -> None:
        """Compute the map (``enabled``: ``None`` = on for embedding models with >= 20 images).

        ``features`` ``(N,D)`` (default: the model's, in batches); ``groups`` one value per
        image for the categorical colouring (default: the labels, when they repeat);
        ``scores`` ``(N,)`` for the continuous one (default: the feature norm).
        """
        n = len(self._inputs)
        if enabled is None:  # on by default: a map that cannot be made must not stop the widget
            if n < MAP_MIN_IMAGES or has_classes(self._model):
                return
            try:
                self._map_setup(True, features, groups, group_name, scores, score_name,
                                projection, k, **projection_options)  # fmt: skip
            except (ValueError, RuntimeError) as error:
                warnings.warn(f"no embedding map: {error}", stacklevel=3)
            return
        if not enabled:
            return
        if k < 1:
            raise ValueError(f"map_k must be >= 1 (neighbours listed per image), got {k}")
        if features is None:
            key = self._options.get("output_key")
            features = embedding.features(self._model, self._inputs, output_key=key)
        if len(features) != n:
            raise ValueError(f"got {len(features)} feature vectors for {n} images")
        self._map_features = features.detach().float()
        self._map_unit = F.normalize(self._map_features, dim=1)  # for each neighbour query
        coords = embedding.project(self._map_features, projection, **projection_options)
        groups = self._captions if groups is None else [str(g) for g in groups]
        if len(groups) != n:
            raise ValueError(f"got {len(groups)} map groups for {n} images")
        names = list(dict.fromkeys(groups))
        codes = None
        if len(names) <= MAX_GROUPS and len(names) < n:
            lookup = {name: i for i, name in enumerate(names)}
            codes = torch.tensor([lookup[g] for g in groups])
        else:
            names = []
        if scores is None:
            scores = self._map_features.norm(dim=1)
        k = min(k, n - 1)
        table = None
        if k > 0 and n * (8 * k + 11) <= TABLE_BYTES:
            table = embedding.neighbour_table(self._map_features, k)
        buffer, info = encode_map(coords, codes, scores, table)
        self._map_k = k
        colour_by = ([group_name] if names else []) + ["rank", "score"]
        info.update(
            groups=names,
            group_name=group_name,
            score_name=score_name,
            colour_by=colour_by,
            projection=projection,
            neighbours=k,
        )
        if projection == "pca":
            info["explained"] = [
                round(float(v), 4) for v in embedding.pca(self._map_features).explained
            ]
        with self.hold_sync():
            self.map_points = buffer
            self.map_info = info
        self._map_pair_shown = False
        self.observe(self._map_follow_view, names=["view"])

    # -- public API ---------------------------------------------------------------------------

    @property
    def map_features(self) -> Tensor | None:
        """The feature vectors ``(N,D)`` behind the map (``None`` when there is no map)."""
        return self._map_features

    def neighbours_of(self, index: int, k: int | None = None) -> list[tuple[int, float]]:
        """The ``k`` (default: the map's) nearest images to ``index`` by cosine similarity."""
        if self._map_features is None:
            raise ValueError("this widget has no map: create it with map=True")
        idx, sim = embedding.neighbours(self._map_unit, index, k or self._map_k, normalized=True)
        return [(int(i), round(float(s), 4)) for i, s in zip(idx, sim, strict=True)]

    def explain_pair(self, index: int, other: int, wait: bool = True) -> Explanation | None:
        """Explain image ``index`` with ``Similarity(f(other))`` and ``other`` with
        ``Similarity(f(index))``, side by side (``other`` in the pair slot), as a click on
        neighbour ``index`` of ``other`` does; returns ``index``'s Explanation when waiting
        (the other is :attr:`pair_explanation`)."""
        if self._map_features is None:
            raise ValueError("explain_pair needs the map's features: create it with map=True")
        n = len(self._inputs)
        for name, value in (("index", index), ("other", other)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
                raise IndexError(f"{name} {value!r} is not an image index in 0..{n - 1}")
        key = ("map-pair", index, other, self.method, self.layer)
        with self._worker.lock:
            if key in self._cache:
                self._pending = self._worker.submit(lambda stale: None)
                self._map_show(*self._cache[key])
            else:
                self._pending = self._worker.submit(lambda stale: self._map_run(key, stale))
                with self.hold_sync():
                    for name, value in self._placeholder(index).items():
                        setattr(self, name, value)
                    self.view = {**self.view, "anchor": other}
                    self.selected = index
                    self.state = "computing"
                    self.error = ""
                    self.traceback = ""
                    self.progress = 0.0
            future: Future = self._pending
        if wait:
            with contextlib.suppress(Stale):
                future.result()
            return self._explanation
        return None

    # -- computing ----------------------------------------------------------------------------

    def _map_pair(
        self, key: tuple, stale: Callable[[], bool] = lambda: False, stream: bool = True
    ) -> tuple[dict[str, Any], Explanation]:
        """The traits and Explanation of a pair view ``("map-pair", index, other, method,
        layer)``, cached; the other image's Explanation is kept in ``_map_pairs``."""
        if key in self._cache:
            return self._cache[key]
        _, index, other, method, layer = key
        feats = self._map_features.to(self._inputs.device)
        mine = Similarity(feats[other], name=f"image {other}")
        theirs = Similarity(feats[index], name=f"image {index}")
        result = self._explain_one(index, self._inputs[index], method, layer, mine, stale, stream)
        partner = self._explain_one(index, self._inputs[other], method, layer, theirs, stale, False)
        from .explorer import _describe  # the caption's words (a call-time import: no circle)

        caption = f"{self._captions[index]} · {_describe(result)}"
        payload = self._view(index, self._shown[index], result, caption)
        payload["view"]["anchor"] = other
        rgb = self._shown[other]
        payload["pair_image"] = wire.encode_image(rgb)
        payload["pair_heatmap"] = wire.encode_heatmap(
            wire.resize_map(partner.heatmap[0], rgb.shape[:2])
        )
        payload["pair"] = {
            "h": int(rgb.shape[0]),
            "w": int(rgb.shape[1]),
            "caption": f"{self._captions[other]} · {_describe(partner)}",
            "label": self._captions[other],
            "method": partner.method,
            "target": partner.target,
            "score": None if partner.scores is None else float(partner.scores[0]),
            "targets": ["similarity"],
        }
        if not hasattr(self, "_map_pairs"):
            self._map_pairs: dict[tuple, Explanation] = {}
        self._map_pairs[key] = partner
        value = (payload, result)
        self._cache[key] = value
        return value

    def _map_run(self, key: tuple, stale: Callable[[], bool]) -> None:
        try:
            value = self._map_pair(key, stale)
        except Stale:
            return
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            trace = "".join(tb.format_exception(error))
            log.error("explaining the pair %s failed:\n%s", key[1:3], trace)

            def show_error() -> None:
                self._explanation = None
                with self.hold_sync():
                    self.view = {**self.view, "pending": False, "failed": key[3]}
                    self.error, self.traceback, self.state = message, trace, "error"
                    self.progress = 0.0
                self._announce()

            self._worker.publish(stale, show_error)
            raise
        self._worker.publish(stale, lambda: self._map_show(*value))

    def _map_show(self, payload: dict[str, Any], explanation: Explanation) -> None:
        self._map_pair_shown = True
        self._show(payload, explanation)

    @property
    def pair_explanation(self) -> Explanation | None:
        """The Explanation in the pair slot on screen (the partner of ``explanation``)."""
        view = self.view
        if "anchor" not in view:
            return None
        key = ("map-pair", view["index"], view["anchor"], view["method"], self.layer)
        return getattr(self, "_map_pairs", {}).get(key)

    def _map_follow_view(self, change: dict) -> None:
        """A new view: clear a pair left from a neighbour click; list the neighbours of the
        image on screen (of the anchor in a pair view)."""
        view = change["new"] or {}
        if "anchor" not in view and self._map_pair_shown:
            self._map_pair_shown = False
            self.pair_image, self.pair_heatmap, self.pair = b"", b"", {}
        anchor = view.get("anchor", view.get("index"))
        if isinstance(anchor, int) and anchor >= 0 and self.neighbours.get("of") != anchor:
            found = self.neighbours_of(anchor)
            self.neighbours = {
                "of": anchor,
                "indices": [i for i, _ in found],
                "scores": [s for _, s in found],
            }

    def _map_message(self, content: dict) -> bool:
        """Handle ``{"type": "pair", "index": j, "other": i}``; False for other messages."""
        if content.get("type") != "pair":
            return False
        index, other = content.get("index"), content.get("other")
        click = content.get("request")  # the page's click id (explorer.py, js/work.js)
        if isinstance(click, str) and len(click) <= 64:
            self._click = click
        try:
            self.explain_pair(index, other, wait=False)
        except (IndexError, ValueError) as error:
            self._refuse_message(f"{{'type': 'pair', 'index': j, 'other': i}}: {error}")
        return True

    def _map_page_pairs(self, methods: list[str], value: Callable[[Any], Any]) -> dict[str, Any]:
        """For an exported page: the pair views of every image with each of its neighbours
        (up to PAGE_PAIR_IMAGES images), named ``pair|method|layer|index|other``."""
        if self._map_features is None or len(self._inputs) > PAGE_PAIR_IMAGES:
            return {}
        table, _ = embedding.neighbour_table(self._map_features, self._map_k)
        found = {}
        for method in methods:
            for other, row in enumerate(table.tolist()):
                for index in row:
                    key = ("map-pair", index, other, method, self.layer)
                    payload, _ = self._map_pair(key, stream=False)
                    name = "|".join(map(str, ["pair", method, self.layer, index, other]))
                    found[name] = {k: value(v) for k, v in payload.items()}
        return found
