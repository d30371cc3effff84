"""``fw.EmbeddingExplorer``: a large image set as a map of its feature space, first.

The Explorer with its map panel always on and drawn above the rest (``map_panel.py``): click a
point to explain that image, shift-drag a box to set ``w.selection``, click a neighbour to see
why the two images are close (``Similarity`` both ways, side by side).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .explorer import Explorer


class EmbeddingExplorer(Explorer):
    """Map-first Explorer. Args as :class:`Explorer` (``images``, ``labels``, ``method``, ...),
    plus:

    Args:
        projection: ``"pca"`` (default: exact, deterministic, on the model's device) or
            ``"umap"`` (needs ``pip install 'famwidget[umap]'``).
        k: neighbours listed for the image on screen.
        features: the feature vectors ``(N,D)`` when already computed (default: the model's,
            in batches on its device).
        groups, group_name: one value per image for the categorical colouring (default: the
            labels) and what they are called ("label", "identity", "cluster", ...).
        scores, score_name: one number per image for the continuous colouring (default: the
            feature norm).
        **projection_options: passed to UMAP (``n_neighbors``, ``min_dist``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        images: Tensor | Sequence[Any],
        labels: Sequence[Any] | None = None,
        projection: str = "pca",
        k: int = 5,
        features: Tensor | None = None,
        groups: Sequence[Any] | None = None,
        group_name: str = "label",
        scores: Tensor | None = None,
        score_name: str = "feature norm",
        projection_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("map", None)  # always on
        super().__init__(model, images, labels=labels, map=False, **kwargs)
        self._map_setup(
            True,
            features=features,
            groups=None if groups is None else list(groups),
            group_name=group_name,
            scores=scores,
            score_name=score_name,
            projection=projection,
            k=k,
            **(projection_options or {}),
        )
        self.map_info = {**self.map_info, "first": True}
