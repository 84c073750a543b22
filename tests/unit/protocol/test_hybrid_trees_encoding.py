"""Fixed point, masks and array payloads of the hybrid tree protocol."""

from __future__ import annotations

import numpy as np
import pytest

from fedcore.errors import ProtocolError
from fedcore.protocol.trees.messages import (
    bin_sums_u64,
    bincount_u64,
    decode_arrays,
    encode_arrays,
    from_fixed,
    mask_u64,
    to_fixed,
)


def test_bin_sums_are_exact_modulo_2_64():
    rng = np.random.default_rng(0)
    w = rng.integers(0, 2**63, 5000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    idx = rng.integers(0, 7, 5000)
    want = [sum(int(x) for x in w[idx == b]) % 2**64 for b in range(7)]
    assert bincount_u64(idx, w, 7).tolist() == want
    n = (1 << 21) + 5  # every weight is -1, so each bin sums to -count (wrapping)
    idx = np.arange(n) % 3
    sums = bincount_u64(idx, np.full(n, np.uint64(2**64 - 1)), 3)
    counts = np.bincount(idx)
    assert sums.tolist() == [(2**64 - int(c)) % 2**64 for c in counts]
    # per (feature, bin) over a subset of rows, two weight vectors at once, as the parties build them
    bins = rng.integers(0, 5, (3, 5000)).astype(np.uint8)
    rows = np.flatnonzero(rng.random(5000) < 0.4)
    v = w[::-1].copy()
    got = bin_sums_u64(bins, [2, 0], rows, [w[rows], v[rows]], 6)
    assert got.shape == (2, 2, 6)
    for k, vec in enumerate((w, v)):
        for j, f in enumerate((2, 0)):
            assert got[k, j].tolist() == [sum(int(x) for x in vec[rows][bins[f, rows] == b]) % 2**64 for b in range(6)]
    whole = bin_sums_u64(bins, [1], None, [w], 6)
    assert whole[0, 0].tolist() == bincount_u64(bins[1], w, 6).tolist()


def test_masked_shares_cancel_and_fixed_point_round_trips():
    g = np.random.default_rng(1).uniform(-1, 1, 1000)
    m = mask_u64(b"s" * 32, "0/1/g", 1000)
    masked = to_fixed(g) + m
    assert np.abs(from_fixed(masked - m) - g).max() <= 2.0**-33
    assert not np.array_equal(m, mask_u64(b"s" * 32, "0/2/g", 1000))
    assert np.array_equal(m, mask_u64(b"s" * 32, "0/1/g", 1000))


def test_array_payloads_round_trip_and_reject_bad_layouts():
    arrays = {"a": np.arange(6, dtype=np.uint64).reshape(2, 3), "b": np.array([1.5, -2.0])}
    layout, data = encode_arrays(arrays)
    back = decode_arrays(layout, data, "t")
    assert all(np.array_equal(back[k], v) for k, v in arrays.items())
    with pytest.raises(ProtocolError, match="too short"):
        decode_arrays(layout, data[:-1], "t")
    with pytest.raises(ProtocolError, match="unexpected payload"):
        decode_arrays(layout, data + b"\x00", "t")
    with pytest.raises(ProtocolError, match="malformed"):
        decode_arrays([["a", "object", [1]]], b"", "t")
    with pytest.raises(ProtocolError, match="cannot travel"):
        encode_arrays({"x": np.array(["s"])})
