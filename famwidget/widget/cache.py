"""The Explorer's explanation cache: least recently used first out, bounded in bytes.

A widget lives for hours in a kernel; a gallery of thousands must not keep every activation.
Each entry is ``(payload, explanation)``: the wire payload (bytes and small dicts, kept as is)
and the Explanation, whose activations ``(1,K,h,w)`` are kept in float16 (half the bytes; they
come back as float32 with float16 precision, about 3 significant digits) unless they exceed the
float16 range. Heatmaps, weights and scores are kept exactly, so a cached map is the map shown.

An entry larger than the whole budget is not kept at all (the caller still gets its value).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable, Iterator, MutableMapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ..explanation import Explanation

DEFAULT_CACHE_BYTES = 16 * 2**20
"""``Explorer(cache_bytes=...)`` default: 16 MiB of explanations per widget. Resident memory grows
by about 1.6x what the cache holds (allocator overhead): 1,000 explanations of 48x48 images
through a 3-conv CNN (112 KiB an entry, 146 kept) grew it by 26 MB, under the 50 MB a
long-running kernel may spend on one widget (256 MiB, the earlier default, kept all 1,000 and
grew it by 124 MB). A 224x224 ResNet-18 entry at ``layer4`` is about 0.5 MiB: some 30 kept."""

ENTRY_OVERHEAD = 1024
"""Bytes counted per entry on top of its tensors and payload (Python objects, small dicts)."""

Entry = tuple[dict[str, Any], Explanation]


class ExplanationCache(MutableMapping):
    """``key -> (payload, Explanation)``, at most ``max_bytes`` (:attr:`nbytes` counts them)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(
                f"cache_bytes must be an int >= 0 (bytes of explanations kept; 0 keeps none), "
                f"got {max_bytes!r}"
            )
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Entry, int]] = OrderedDict()
        self.nbytes = 0
        """Bytes held now (tensors, payload bytes, a fixed overhead per entry)."""

    def __setitem__(self, key: Hashable, value: Entry) -> None:
        payload, explanation = value
        stored = (payload, compact(explanation))
        size = entry_bytes(*stored)
        if key in self._entries:
            del self[key]
        if size > self.max_bytes:
            return
        self._entries[key] = (stored, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.nbytes -= dropped

    def __getitem__(self, key: Hashable) -> Entry:
        (payload, explanation), _ = self._entries[key]
        self._entries.move_to_end(key)
        return payload, restored(explanation)

    def __delitem__(self, key: Hashable) -> None:
        _, size = self._entries.pop(key)
        self.nbytes -= size

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def compact(explanation: Explanation) -> Explanation:
    """The Explanation with float32 activations stored as float16 (when they fit its range)."""
    acts = explanation.activations
    if acts is None or acts.dtype != torch.float32:
        return explanation
    half = acts.half()
    if not bool(torch.isfinite(half).all()) and bool(torch.isfinite(acts).all()):
        return explanation  # beyond float16's range (|a| > 65504): kept as float32
    return replace(explanation, activations=half)


def restored(explanation: Explanation) -> Explanation:
    """A cached Explanation as the methods return it: float16 activations back to float32."""
    acts = explanation.activations
    if acts is None or acts.dtype != torch.float16:
        return explanation
    return replace(explanation, activations=acts.float())


def entry_bytes(payload: dict[str, Any], explanation: Explanation) -> int:
    """Bytes an entry holds: payload bytes and dicts, the Explanation's tensors."""
    total = ENTRY_OVERHEAD
    for value in payload.values():
        if isinstance(value, (bytes, bytearray, memoryview)):
            total += len(value)
        elif isinstance(value, (dict, list, str)):
            total += len(json.dumps(value, default=str))
    e = explanation
    for t in (e.heatmap, e.activations, e.weights, e.scores, *(e.points or [])):
        total += _tensor_bytes(t)
    return total


def _tensor_bytes(t: Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()
