"""famwidget.widget.cache: the Explorer's explanation cache is an LRU bounded in bytes."""

from __future__ import annotations

import pytest
import torch

from famwidget.explanation import Explanation
from famwidget.widget.cache import ENTRY_OVERHEAD, ExplanationCache, entry_bytes


def entry(k: int = 8, scale: float = 1.0) -> tuple[dict, Explanation]:
    torch.manual_seed(k)
    explanation = Explanation(
        heatmap=torch.rand(1, 16, 16),
        method="grad-fam",
        layer="body",
        target="Embedding()",
        activations=torch.rand(1, k, 8, 8) * scale,
        weights=torch.rand(1, k),
        scores=torch.rand(1),
    )
    return {"image": bytes(16 * 16 * 3), "view": {"index": 0}}, explanation


def test_activations_are_kept_in_float16_and_come_back_as_float32():
    cache = ExplanationCache(10**6)
    payload, exp = entry()
    cache["a"] = (payload, exp)
    held = cache._entries["a"][0][1]
    assert held.activations.dtype == torch.float16
    got_payload, got = cache["a"]
    assert got_payload is payload and got.activations.dtype == torch.float32
    assert torch.allclose(got.activations, exp.activations, rtol=1e-3, atol=1e-4)
    assert torch.equal(got.heatmap, exp.heatmap)  # the map shown is kept exactly
    assert cache.nbytes == entry_bytes(payload, held) < entry_bytes(payload, exp)


def test_activations_beyond_float16_range_stay_float32():
    cache = ExplanationCache(10**6)
    payload, exp = entry(scale=1e6)
    cache["big"] = (payload, exp)
    assert cache._entries["big"][0][1].activations.dtype == torch.float32
    assert torch.equal(cache["big"][1].activations, exp.activations)


def test_least_recently_used_goes_first_and_the_bound_holds():
    size = entry_bytes(entry()[0], entry()[1]) - 8 * 8 * 8 * 2  # float16 activations
    cache = ExplanationCache(3 * size + 10)
    for key in "abc":
        cache[key] = entry()
    assert cache["a"][1].method == "grad-fam"  # a look-up makes "a" the most recently used
    cache["d"] = entry()
    assert list(cache) == ["c", "a", "d"] and "b" not in cache
    assert cache.nbytes <= cache.max_bytes and len(cache) == 3
    del cache["c"]
    assert cache.nbytes == 2 * size and set(cache) == {"a", "d"}
    cache["a"] = entry()  # replacing an entry counts it once
    assert cache.nbytes == 2 * size


def test_an_entry_larger_than_the_budget_is_not_kept():
    cache = ExplanationCache(ENTRY_OVERHEAD)
    cache["x"] = entry()
    assert "x" not in cache and cache.nbytes == 0
    assert len(ExplanationCache(0)) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "256MB", True])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError, match=r"cache_bytes must be an int >= 0"):
        ExplanationCache(bad)
