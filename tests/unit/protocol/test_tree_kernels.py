"""The compiled loops of tree scoring give exactly what their numpy forms gave (the forms the protocol
used before :mod:`fedcore.protocol.scoring.tree_kernels`), so what crosses the wire is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from fedcore.errors import ProtocolError
from fedcore.protocol.scoring import tree_kernels as kernels
from fedcore.protocol.scoring.trees import RING, coordinator_sum, prg, rotations

SEED = bytes(range(32))


def _regions(rng: np.random.Generator, k: int, top: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.sort(rng.integers(2, top + 1, k)).astype(np.int64)
    return sizes, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _ring(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 2**32, shape, dtype=np.uint64).astype(RING)


@pytest.mark.parametrize("top", [8, 300])  # small regions, and regions past one byte of picks
def test_rotated_masked_tables_match_the_gather_form(top):
    rng = np.random.default_rng(1)
    n, k = 500, 19
    sizes, off = _regions(rng, k, top)
    width = int(sizes.sum())
    fx, alpha = _ring(rng, width), rng.random((n, k)) < 0.4
    masks = prg(SEED, "mask", n * width).reshape(n, width)
    expect = masks.copy()
    rho = rotations(SEED, sizes, n)
    for q in range(k):
        i = np.arange(sizes[q])
        rotated = fx[off[q] + (i[None, :] - rho[:, q : q + 1]) % sizes[q]]
        expect[:, off[q] : off[q] + sizes[q]] += np.where(alpha[:, q : q + 1], rotated, 0).astype(RING)
    rot, rot_off = kernels.rotated_tables(fx, sizes)
    raw = prg(SEED, "rotation", n * k).reshape(n, k)
    got = kernels.lender_tables(masks.copy(), raw, alpha, rot, rot_off, off, sizes)
    assert got.dtype == RING and np.array_equal(got, expect)


def test_the_reciprocal_mod_is_exact_at_the_edges_of_the_ring():
    """``x mod m`` without division: multiples of ``m`` and the largest 32-bit values."""
    sizes = np.array([2, 3, 7, 255, 256, 257, 65535, 65536], dtype=np.int64)
    k = len(sizes)
    xs = np.concatenate([np.arange(0, 600), 2**32 - 1 - np.arange(600), 65536 * np.arange(1, 300) - 1])
    raw = np.repeat(xs.astype(RING)[:, None], k, axis=1)
    picks = np.zeros((len(xs), k), dtype=np.int64)
    masks = np.zeros((len(xs), int(sizes.sum())), dtype=RING)
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    chat, _ = kernels.platform_reply(picks, raw, masks, off, sizes, np.zeros(len(xs), dtype=RING))
    assert np.array_equal(chat, xs.astype(np.int64)[:, None] % sizes[None, :])


def test_the_platforms_reply_and_the_coordinators_sum_match_the_gather_form():
    rng = np.random.default_rng(2)
    n, k = 700, 23
    sizes, off = _regions(rng, k, 9)
    width = int(sizes.sum())
    picks = (rng.random((n, k)) * sizes).astype(np.int64)
    s = _ring(rng, n)
    chat_expect = (picks + rotations(SEED, sizes, n)) % sizes
    at = (np.arange(n) * width)[:, None] + off[None, :] + chat_expect
    masks = prg(SEED, "mask", n * width)
    y_expect = np.take(masks, at).sum(axis=1, dtype=RING) + s
    raw = prg(SEED, "rotation", n * k).reshape(n, k)
    chat, y = kernels.platform_reply(picks, raw, masks.reshape(n, width), off, sizes, s)
    assert np.array_equal(chat, chat_expect) and np.array_equal(y, y_expect) and y.dtype == RING

    tables = _ring(rng, (n, width))
    z_expect = np.take(tables.ravel(), at).sum(axis=1, dtype=RING) + s
    for wire in (chat.astype(np.uint8), chat):  # as the coordinator reads it, and as int64
        assert np.array_equal(coordinator_sum(sizes, tables, wire, s), z_expect)
    bad = chat.astype(np.uint8)
    bad[n - 1, k - 1] = sizes[k - 1]  # one pick outside its region
    with pytest.raises(ProtocolError, match="below the region sizes"):
        coordinator_sum(sizes, tables, bad, s)


def test_threshold_ranks_match_searchsorted_with_ties_missing_and_infinities():
    rng = np.random.default_rng(3)
    n, roots = 2000, 6
    thresholds = [np.unique(rng.normal(size=m).round(1)) for m in (1, 5, 40, 300)]
    thresholds.append(np.zeros(0))  # a feature without thresholds: always rank 0 (or missing)
    x = rng.normal(size=(len(thresholds), n)).round(1)  # ties with the thresholds
    x[rng.random(x.shape) < 0.1] = np.nan
    x[:, :4] = [-np.inf, np.inf, np.nan, 0.0]  # every feature sees each of them
    cols = [np.sort(rng.choice(roots, rng.integers(1, roots + 1), replace=False)) for _ in thresholds]
    adds = [rng.integers(0, 4, (len(t) + 2, len(c))) for t, c in zip(thresholds, cols, strict=True)]
    base = np.arange(roots, dtype=np.int64) * 64
    table = rng.integers(0, 10**6, roots * 64)
    codes = np.zeros((n, roots), dtype=np.int64)
    for f, (thr, c, add) in enumerate(zip(thresholds, cols, adds, strict=True)):
        rank = np.searchsorted(thr, x[f])
        rank[np.isnan(x[f])] = len(thr) + 1
        codes[:, c] += add[rank]
    expect = table[base[None, :] + codes]

    def flat(parts, dtype):
        return np.concatenate([np.zeros(0, dtype=dtype), *[np.asarray(p, dtype=dtype).ravel() for p in parts]])

    offs = [np.cumsum([0] + [np.size(p) for p in parts]) for parts in (thresholds, cols, adds)]
    got = kernels.rank_decide(x, flat(thresholds, np.float64), offs[0], flat(cols, np.int64), offs[1],
                              flat(adds, np.int64), offs[2], base, table)  # fmt: skip
    assert np.array_equal(got, expect)
