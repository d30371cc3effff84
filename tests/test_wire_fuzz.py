"""The wire format's encoder side under hypothesis: any valid array encodes and decodes back
to its declared shape and dtype (within the quantisation step); bad input is refused with an
error that names it; any byte string either decodes to the declared shape or is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from famwidget.widget import wire

FAST = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
sides = st.integers(1, 24)
unit = st.floats(0, 1, allow_nan=False, width=32)


@FAST
@given(st.data(), sides, sides)
def test_any_heatmap_round_trips_to_its_shape_within_half_a_step(data, h, w):
    values = data.draw(arrays(np.float32, (h, w), elements=st.floats(-2, 3, width=32)))
    encoded = wire.encode_heatmap(torch.from_numpy(values))
    decoded = wire.decode(encoded, (h, w), "uint8")
    assert decoded.shape == (h, w) and decoded.dtype == np.uint8
    expected = np.clip(values, 0, 1)
    assert np.abs(decoded / 255.0 - expected).max() <= 0.5 / 255 + 1e-6


@FAST
@given(st.data(), sides, sides)
def test_any_image_round_trips_exactly(data, h, w):
    rgb = data.draw(arrays(np.uint8, (h, w, 3)))
    assert np.array_equal(wire.decode(wire.encode_image(rgb), (h, w, 3)), rgb)


@FAST
@given(st.data(), st.integers(1, 40), st.integers(1, 6), st.integers(1, 6), st.integers(1, 8))
def test_any_channel_stack_round_trips_within_its_scale(data, k, h, w, top):
    finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
    acts = data.draw(arrays(np.float32, (k, h, w), elements=finite))
    weights = data.draw(arrays(np.float32, (k,), elements=finite))
    encoded, info = wire.encode_channels(torch.from_numpy(acts), torch.from_numpy(weights), top)
    n = min(top, k)
    assert (info["k"], info["h"], info["w"]) == (n, h, w)
    q = wire.decode(encoded, (n, h, w)).astype(np.float64)
    lo, scale = np.array(info["lo"]), np.array(info["scale"])
    back = lo[:, None, None] + q * scale[:, None, None]
    original = acts[info["ids"]].astype(np.float64)
    assert np.abs(back - original).max() <= scale.max() / 2 * 1.001 + 1e-3
    assert sorted(set(info["ids"])) == sorted(info["ids"]) and max(info["ids"]) < k


@FAST
@given(st.data(), st.integers(0, 30))
def test_any_points_round_trip_as_little_endian_uint16(data, n):
    points = data.draw(arrays(np.int64, (n, 2), elements=st.integers(0, 65535)))
    encoded = wire.encode_points(torch.from_numpy(points))
    if n == 0:
        assert encoded == b""
    else:
        assert np.array_equal(wire.decode(encoded, (n, 2), "uint16"), points)


@FAST
@given(st.binary(max_size=200), st.lists(st.integers(0, 12), max_size=4),
       st.sampled_from(sorted(wire.DTYPES)))  # fmt: skip
def test_any_byte_string_decodes_to_the_declared_shape_or_is_refused(data, shape, dtype):
    try:
        out = wire.decode(data, tuple(shape), dtype)
    except ValueError as error:
        assert f"{len(data)}" in str(error) and "bytes" in str(error)
    else:
        assert out.shape == tuple(shape) and out.dtype == wire.DTYPES[dtype]
        assert out.tobytes() == data


@FAST
@given(sides, sides, st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_a_heatmap_with_nan_or_inf_is_refused(h, w, bad):
    values = torch.rand(h, w)
    values[h // 2, w // 2] = bad
    with pytest.raises(ValueError, match=r"1 NaN/Inf value\(s\)"):
        wire.encode_heatmap(values)


BAD = [
    (wire.encode_heatmap, (torch.rand(2, 3, 4),), r"float tensor \(H,W\), got \(2, 3, 4\)"),
    (wire.encode_heatmap, (torch.zeros(4, 4, dtype=torch.uint8),), r"float tensor \(H,W\)"),
    (wire.encode_heatmap, (np.zeros((4, 4)),), r"got ndarray"),
    (wire.encode_image, (np.zeros((4, 4, 3), np.float32),), r"uint8 image, got float32"),
    (wire.encode_image, (np.zeros((4, 4, 4), np.uint8),), r"\(4, 4, 4\)"),
    (wire.encode_image, ([[0]],), r"got list"),
    (wire.encode_channels, (torch.rand(3, 2, 2), torch.rand(4)), r"\(3, 2, 2\) and \(4,\)"),
    (wire.encode_channels, (torch.rand(3, 4), torch.rand(3)), r"activations \(K,h,w\)"),
    (wire.encode_channels, (torch.full((2, 2, 2), float("nan")), torch.rand(2)), r"NaN/Inf"),
    (wire.encode_points, (torch.tensor([[1, 2, 3]]),), r"\(N,2\) integers"),
    (wire.encode_points, (torch.tensor([[0.5, 1.0]]),), r"\(N,2\) integers"),
    (wire.encode_points, (torch.tensor([[70000, 1]]),), r"0..65535"),
    (wire.decode, (b"\0" * 3, (2,), "uint16"), r"4 bytes, this one 3"),
    (wire.decode, (b"", (1,), "float64"), r"dtype must be one of"),
    (wire.decode, (b"", (-1,), "uint8"), r"ints >= 0"),
]


@pytest.mark.parametrize(("encode", "args", "pattern"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_to_the_wire_is_refused_naming_it(encode, args, pattern):
    with pytest.raises(ValueError, match=pattern):
        encode(*args)
