"""``fw.Explorer.from_store``: the widget over a stored set, showing the stored maps.

A minimal version: the gallery holds at most ``limit`` done entries of the store (chosen by
``entries=`` or the first ones); a click on one shows its stored map at once, without running
the model; another method or layer is explained live as in any Explorer. The model inputs come
from ``data`` (the data the store was made from) when given, else from the stored thumbnails
(then the live explanations see the thumbnails, not the original images, and a note says so).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import numpy as np
import torch
from torch import nn

from .sources import as_source
from .store import DONE, open_explanations

log = logging.getLogger(__name__)


def explorer_from_store(
    cls: type,
    path: str | pathlib.Path,
    model: nn.Module,
    data: Any = None,
    entries: Any = None,
    limit: int = 64,
    **kwargs: Any,
) -> Any:
    """An ``Explorer`` (``cls``) over entries of the store at ``path`` (see the module)."""
    store = open_explanations(path)
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
    names = store.names
    cfg = store.attrs["config"]
    if data is not None:
        source = as_source(
            data, kwargs.pop("preprocess", None) or getattr(model, "preprocess", None)
        )
        if len(source) != len(store) or [source.names[i] for i in chosen] != [
            names[i] for i in chosen
        ]:
            raise ValueError("data does not hold the store's entries (the names differ)")
        loaded = [source.load(int(i)) for i in chosen]
        inputs = torch.stack([x for x, _ in loaded])
    else:
        thumbs = store.thumbnails
        if thumbs is None:
            raise ValueError(f"{str(path)!r} keeps no thumbnails; pass data= to browse it")
        size = tuple(cfg["input_shape"][1:])
        pics = torch.from_numpy(thumbs[chosen]).permute(0, 3, 1, 2).float() / 255
        pics = torch.nn.functional.interpolate(pics, size=size, mode="bilinear")
        undo = getattr(model, "preprocess", None)
        mean, std = getattr(undo, "mean", 0.0), getattr(undo, "std", 1.0)
        inputs = (pics - mean) / std
        log.warning("from_store without data=: live explanations use the stored thumbnails")
    labels = kwargs.pop("labels", None) or [names[i] for i in chosen]
    widget = cls(
        model,
        inputs,
        labels=labels,
        method=store.method,
        layer=kwargs.pop("layer", cfg.get("layer") or None),
        **kwargs,
    )
    for position, i in enumerate(chosen):
        exp = store[int(i)]
        key = widget._key(position)
        caption = f"{labels[position]} · {exp.method} @ {exp.layer} (stored)"
        widget._cache[key] = (widget._view(position, widget._shown[position], exp, caption), exp)
    widget.store_entries = [int(i) for i in chosen]
    return widget
