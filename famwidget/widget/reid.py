"""``fw.ReIDExplorer``: a query and a gallery ranked by cosine similarity; click a result to see
why the two match.

A click on result ``i`` explains the pair: the result with ``Similarity(f(query))`` and the query
with ``Similarity(f(result))`` (what each image shares with the other), or, with the pair-target
picker on "embedding", each image's own feature map (``Embedding()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import traitlets as t
from torch import Tensor, nn

from ..api import model_device
from ..explanation import Explanation
from ..tap import preserved
from ..targets import Embedding, OutputKey, Similarity, feature_vector
from . import wire
from .explorer import Explorer, _describe, _inputs

PAIR_TARGETS = ("similarity", "embedding")


class ReIDExplorer(Explorer):
    """Query + ranked gallery. Args as :class:`Explorer`, plus:

    Args:
        query: one image, ``(3,H,W)`` preprocessed or raw (with ``preprocess``).
        gallery: ``(N,3,H,W)`` preprocessed, or raw images with ``preprocess``.
        query_id, gallery_ids: identities; when given, true matches are marked in the gallery.
        top: show only the ``top`` best-ranked gallery images.
        map: the embedding map of the gallery (``None``: on with >= 20 results), coloured by
            identity, rank or similarity to the query.
    """

    pair = t.Dict().tag(sync=True)
    pair_image = t.Bytes(b"").tag(sync=True)
    pair_heatmap = t.Bytes(b"").tag(sync=True)
    pair_target = t.Unicode("similarity").tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        query: Any,
        gallery: Tensor | Sequence[Any],
        query_id: Any = None,
        gallery_ids: Sequence[Any] | None = None,
        preprocess: Callable[[Any], Tensor] | None = None,
        display: np.ndarray | None = None,
        query_display: np.ndarray | None = None,
        top: int | None = None,
        output_key: OutputKey = None,
        method: str = "grad-fam",
        map: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if preprocess is None and isinstance(query, Tensor) and query.dim() != 3:
            raise ValueError(
                f"query must be one preprocessed image (3,H,W), got shape {tuple(query.shape)}; "
                "the gallery holds the batch (give query[0] for a batch of one)"
            )
        query_in = [query] if preprocess is not None else query[None]
        q_shown = None if query_display is None else np.asarray(query_display)[None]
        q_tensor, q_rgb = _inputs(query_in, preprocess, q_shown)
        g_tensor, g_rgb = _inputs(gallery, preprocess, display)
        device = model_device(model)
        q_feat, g_feat = _embed(model, q_tensor.to(device), g_tensor.to(device), output_key)
        scores = F.cosine_similarity(g_feat, q_feat, dim=1)
        order = scores.argsort(descending=True)[: top or len(scores)].cpu()
        if gallery_ids is not None and len(gallery_ids) != len(g_tensor):
            raise ValueError(f"got {len(gallery_ids)} gallery ids for {len(g_tensor)} images")
        ids = None if gallery_ids is None else [gallery_ids[i] for i in order.tolist()]
        captions = [
            f"{rank + 1}. {float(scores[i]):.2f}" + ("" if ids is None else f" · id {ids[rank]}")
            for rank, i in enumerate(order.tolist())
        ]
        self._query = q_tensor[0].to(device)
        self._query_rgb = q_rgb[0]
        self._query_feature = q_feat[0]
        self._gallery_features = g_feat[order.to(device)]
        self.ranking = order.tolist()
        """Gallery indices in the order shown (best match first)."""
        self.scores = scores[order].cpu()
        """Cosine similarity of each shown result to the query, ``(N,)``."""
        self._pairs: dict[tuple, Explanation] = {}
        super().__init__(
            model,
            g_tensor[order],
            labels=captions,
            display=g_rgb[order.numpy()],
            method=method,
            output_key=output_key,
            map=False,  # set up below, from the features and scores computed here
            **kwargs,
        )
        scored = {"scores": [round(float(v), 4) for v in self.scores]}
        if ids is not None:
            scored["marks"] = ["match" if i == query_id else "miss" for i in ids]
        self.gallery = {**self.gallery, **scored}
        self._map_setup(map, self._gallery_features, ids, "identity", self.scores, "similarity")
        self.observe(self._on_choice, names=["pair_target"])

    def _key(self, index: int) -> tuple:
        if self.pair_target not in PAIR_TARGETS:
            raise ValueError(f"pair_target must be one of {PAIR_TARGETS}, not {self.pair_target!r}")
        return (index, self.method, self.layer, self.pair_target)

    def _variants(self) -> list[tuple]:
        return [(target,) for target in PAIR_TARGETS]

    def _placeholder(self, index: int) -> dict[str, Any]:
        return {**super()._placeholder(index), "pair_image": b"", "pair_heatmap": b"", "pair": {}}

    def _build(
        self, key: tuple, stale: Callable[[], bool], stream: bool = True
    ) -> tuple[dict[str, Any], Explanation]:
        index, method, layer, pair_target = key
        if pair_target == "similarity":
            result_target = Similarity(self._query_feature, name="query")
            query_target = Similarity(self._gallery_features[index], name=f"result {index + 1}")
        else:
            result_target = query_target = Embedding()
        result = self._explain_one(
            index, self._inputs[index], method, layer, result_target, stale, stream
        )
        query = self._explain_one(index, self._query, method, layer, query_target, stale, False)
        caption = f"result {self._captions[index]} · {_describe(result)}"
        payload = self._view(index, self._shown[index], result, caption)
        payload["pair_image"] = wire.encode_image(self._query_rgb)
        payload["pair_heatmap"] = wire.encode_heatmap(query.heatmap[0])
        payload["pair"] = {
            "h": int(self._query_rgb.shape[0]),
            "w": int(self._query_rgb.shape[1]),
            "caption": f"query · {_describe(query)}",
            "label": "query",
            "method": query.method,
            "target": query.target,
            "score": None if query.scores is None else float(query.scores[0]),
            "targets": list(PAIR_TARGETS),
        }
        self._pairs[key] = query
        return payload, result

    def _label(self, index: int) -> str:
        return f"result {self._captions[index]}"

    @classmethod
    def from_store(
        cls, path: Any, model: nn.Module, query: Any, data: Any = None, **kwargs: Any
    ) -> ReIDExplorer:
        """``query`` against a gallery stored by ``fw.explain_dataset``, ranked by the stored
        feature vectors, read lazily; stored maps show with no recomputing
        (``famwidget.dataset.browse``: ``query_id``, ``gallery_ids``, ``top``, ``entries``)."""
        from ..dataset.browse import reid_from_store

        return reid_from_store(cls, path, model, query, data, **kwargs)

    @property
    def pair_explanation(self) -> Explanation | None:
        """The query's Explanation in the pair on screen (``explanation`` is the result's)."""
        if self.selected < 0:
            return None
        return self._pairs.get(self._key(self.selected))


def _embed(
    model: nn.Module, query: Tensor, gallery: Tensor, key: OutputKey, batch: int = 64
) -> tuple[Tensor, Tensor]:
    """Feature vectors ``(1,D)`` and ``(N,D)`` of the query and the gallery, in eval mode."""
    with preserved(model), torch.inference_mode():
        q = feature_vector(model(query), key).float()
        g = torch.cat(
            [
                feature_vector(model(gallery[i : i + batch]), key).float()
                for i in range(0, len(gallery), batch)
            ]
        )
    return q, g
