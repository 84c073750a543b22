"""Compiled loops of tree scoring (:mod:`fedcore.protocol.scoring.trees`): one pass per applicant where
numpy needed a pass per array (index arrays, gathers, masks, sums), so a batch costs memory bandwidth once.

Each kernel computes exactly what its numpy form did (integer arithmetic in ``Z_2^32``, the same
threshold ranks), so outputs are bit-identical and what crosses the wire is unchanged
(``tests/unit/protocol/test_tree_kernels.py`` checks them against the numpy forms). Integer division is avoided in
the loops: ``x mod m`` for ``0 <= x < 2^32`` and ``m <= 2^16`` comes from the float reciprocal
``1/m`` (the quotient is off by at most one, then corrected). Numba compiles them
on first use in a process (cached on disk beside this file, or in numba's user cache when that is
read-only); ``nogil`` lets the batch path's chunks in flight run on separate cores. Importing this module
does not import numba: a process that never scores a tree model never pays for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "coordinator_sum", "lender_paths", "lender_tables", "platform_reply", "rank_decide", "rotated_tables", "warm",
]

_lock = threading.Lock()
_compiled: dict[str, Callable[..., Any]] = {}


def _kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled (once per process; numba's on-disk cache across processes)."""
    got = _compiled.get(fn.__name__)
    if got is None:
        with _lock:
            got = _compiled.get(fn.__name__)
            if got is None:
                import numba

                got = numba.njit(cache=True, nogil=True)(fn)
                _compiled[fn.__name__] = got
    return got


def _in(a: Any, dtype: Any) -> np.ndarray:
    """An input as the kernels take it (C order, ``dtype``, read-only): one compiled signature per kernel
    whoever calls, so numba's on-disk cache serves every process."""
    v = np.ascontiguousarray(a, dtype=dtype).view()
    v.flags.writeable = False
    return v


_I8, _U4 = np.int64, np.uint32


def _lender_tables(out: Any, rho: Any, alpha: Any, rot: Any, rot_off: Any, off: Any, sizes: Any, inv: Any) -> None:
    n, k = alpha.shape
    for a in range(n):
        row, ra, go = out[a], rho[a], alpha[a]
        for q in range(k):
            m = sizes[q]
            x = np.int64(ra[q])  # x mod m through the float reciprocal: at most one off, corrected
            r = x - np.int64(x * inv[q]) * m
            if r < 0:
                r += m
            elif r >= m:
                r -= m
            src = rot_off[q] + m * (r if go[q] else m)  # no branch on the path in the adds
            o = off[q]
            for i in range(m):
                row[o + i] += rot[src + i]


def rotated_tables(fx: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per region (``fx``'s values region by region, ``sizes``), its ``m + 1`` rows of ``m``: row ``r``
    holds ``v[(i - r) mod m]``, row ``m`` zeros (a region the path does not enter); all regions one after
    another, and where each region's rows start."""
    sizes = np.asarray(sizes, dtype=np.int64)
    parts, o = [], 0
    for m in sizes.tolist():
        i = np.arange(m)
        parts += [fx[o + (i[None, :] - i[:, None]) % m].ravel(), np.zeros(m, dtype=fx.dtype)]
        o += m
    rot_off = np.concatenate([[0], np.cumsum(sizes * (sizes + 1))[:-1]]).astype(np.int64)
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=fx.dtype)), rot_off


def lender_tables(masks: np.ndarray, rho: np.ndarray, alpha: np.ndarray, rot: np.ndarray, rot_off: np.ndarray,
                  off: np.ndarray, sizes: np.ndarray) -> np.ndarray:  # fmt: skip
    """``masks`` (n x width, ring; updated in place and returned) plus, per region ``S``, its row of
    :func:`rotated_tables` at ``rho mod m`` if the applicant's path enters it (``alpha``), else zeros:
    ``T_S[i] = M_S[i] + alpha_S v_S[(i - rho_S) mod m]``."""
    if masks.dtype != _U4 or not masks.flags.c_contiguous or not masks.flags.writeable:
        raise ValueError("masks must be a writable C-ordered uint32 array")
    _kernel(_lender_tables)(masks, _in(rho, _U4), _in(alpha, np.bool_), _in(rot, _U4), _in(rot_off, _I8),
                            _in(off, _I8), _in(sizes, _I8), _in(1.0 / np.asarray(sizes), np.float64))  # fmt: skip
    return masks


def _platform_reply(picks: Any, rho: Any, masks: Any, off: Any, sizes: Any, inv: Any, s: Any, chat: Any,
                    y: Any) -> None:  # fmt: skip
    n, k = picks.shape
    for a in range(n):
        acc = np.uint64(s[a])
        pa, ra, ma, ca = picks[a], rho[a], masks[a], chat[a]
        for q in range(k):
            m = sizes[q]
            x = np.int64(ra[q])  # x mod m as in _lender_tables, then plus the pick (below m) mod m
            r = x - np.int64(x * inv[q]) * m
            if r < 0:
                r += m
            elif r >= m:
                r -= m
            c = pa[q] + r
            if c >= m:
                c -= m
            ca[q] = c
            acc += ma[off[q] + c]
        y[a] = acc


def platform_reply(picks: np.ndarray, rho: np.ndarray, masks: np.ndarray, off: np.ndarray, sizes: np.ndarray,
                   s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``chat = (picks + rho mod m) mod m`` (n x regions; picks below their region's size ``m``) and
    ``y = sum_S M_S[chat_S] + s`` (ring)."""
    n, k = picks.shape
    chat, y = np.empty((n, k), dtype=np.int64), np.empty(n, dtype=_U4)
    _kernel(_platform_reply)(_in(picks, _I8), _in(rho, _U4), _in(masks, _U4), _in(off, _I8), _in(sizes, _I8),
                             _in(1.0 / np.asarray(sizes), np.float64), _in(s, _U4), chat, y)  # fmt: skip
    return chat, y


def _coordinator_sum(tables: Any, chat: Any, off: Any, sizes: Any, s: Any, z: Any) -> bool:
    n, k = chat.shape
    for a in range(n):
        acc = np.uint64(s[a])
        ta, ca = tables[a], chat[a]
        for q in range(k):
            c = np.int64(ca[q])
            if c < 0 or c >= sizes[q]:
                return False
            acc += ta[off[q] + c]
        z[a] = acc
    return True


def coordinator_sum(tables: np.ndarray, chat: np.ndarray, off: np.ndarray, sizes: np.ndarray,
                    s: np.ndarray) -> np.ndarray | None:  # fmt: skip
    """``z = sum_S T_S[chat_S] + s`` (ring), or None if a pick is not below its region's size."""
    z = np.empty(tables.shape[0], dtype=_U4)
    picks = _in(chat, chat.dtype if chat.dtype in (np.uint8, np.dtype("<u2")) else _I8)  # as on the wire
    ok = _kernel(_coordinator_sum)(_in(tables, _U4), picks, _in(off, _I8), _in(sizes, _I8), _in(s, _U4), z)
    return z if ok else None


def _rank_decide(
    x: Any, thr: Any, thr_off: Any, cols: Any, col_off: Any, add: Any, add_off: Any, base: Any, table: Any, out: Any
) -> None:
    n = x.shape[1]
    nf, nr = thr_off.shape[0] - 1, base.shape[0]
    codes = np.zeros(nr, dtype=np.int64)
    for a in range(n):
        codes[:] = 0
        for f in range(nf):
            v = x[f, a]
            t0 = thr_off[f]
            size = thr_off[f + 1] - t0
            if np.isnan(v):
                rank = size + 1
            else:  # np.searchsorted(thr, v), side left: the first threshold >= v
                lo, hi = t0, t0 + size
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if thr[mid] < v:
                        lo = mid + 1
                    else:
                        hi = mid
                rank = lo - t0
            c0, c1 = col_off[f], col_off[f + 1]
            row = add_off[f] + rank * (c1 - c0)
            for j in range(c1 - c0):
                codes[cols[c0 + j]] += add[row + j]
        for j in range(nr):
            out[a, j] = table[base[j] + codes[j]]


def rank_decide(
    x: np.ndarray, thr: np.ndarray, thr_off: np.ndarray, cols: np.ndarray, col_off: np.ndarray, add: np.ndarray,
    add_off: np.ndarray, base: np.ndarray, table: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Per row of ``x`` (features x n, NaN: missing) and root: ``table[base + code]``, the code summed over
    features ``f``: at the value's rank among its sorted thresholds ``thr[thr_off[f]:thr_off[f + 1]]``
    (missing: one past the last rank), the row of ``f``'s table (flat from ``add_off[f]``) over the roots
    ``cols[col_off[f]:col_off[f + 1]]``."""
    out = np.empty((x.shape[1], len(base)), dtype=_I8)
    ints = [_in(a, _I8) for a in (thr_off, cols, col_off, add, add_off, base, table)]
    _kernel(_rank_decide)(_in(x, np.float64), _in(thr, np.float64), *ints, out)
    return out


def _lender_paths(pos: Any, left: Any, value: Any, region_tree: Any, roots: Any, vals: Any, alpha: Any) -> None:
    n, t = pos.shape
    for a in range(n):
        pa = pos[a]
        for j in range(t):
            p = pa[j]
            vals[a, j] = value[p] if left[p] < 0 else 0.0
        for q in range(roots.shape[0]):
            alpha[a, q] = pa[region_tree[q]] == roots[q]


def lender_paths(pos: np.ndarray, left: np.ndarray, value: np.ndarray, region_tree: np.ndarray,
                 roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """From the node each tree's lender splits reach (``pos``, n x trees): the leaf value where it is a
    leaf, else 0 (n x trees), and ``alpha`` (n x regions): the node is the region's root."""
    n, t = pos.shape
    vals, alpha = np.empty((n, t), dtype=np.float64), np.empty((n, len(roots)), dtype=np.bool_)
    _kernel(_lender_paths)(_in(pos, _I8), _in(left, _I8), _in(value, np.float64), _in(region_tree, _I8),
                           _in(roots, _I8), vals, alpha)  # fmt: skip
    return vals, alpha


def warm() -> None:
    """Compile every kernel now (or load it from numba's on-disk cache) on tiny inputs, with each pick
    width the wire carries, so that no scoring request pays for the compilation. ``scripts/setup.sh``
    runs it once after installing; a party node holding a tree model runs it in the background at start."""
    sizes, off = np.array([2], dtype=_I8), np.array([0], dtype=_I8)
    rot, rot_off = rotated_tables(np.arange(2, dtype=_U4), sizes)
    lender_tables(np.zeros((1, 2), dtype=_U4), np.ones((1, 1), dtype=_U4), np.ones((1, 1), dtype=np.bool_), rot,
                  rot_off, off, sizes)  # fmt: skip
    platform_reply(np.zeros((1, 1), dtype=_I8), np.ones((1, 1), dtype=_U4), np.zeros((1, 2), dtype=_U4), off, sizes,
                   np.zeros(1, dtype=_U4))  # fmt: skip
    for width in (np.uint8, np.dtype("<u2"), _I8):
        coordinator_sum(np.zeros((1, 2), dtype=_U4), np.zeros((1, 1), dtype=width), off, sizes, np.zeros(1, dtype=_U4))
    one = np.array([0, 1], dtype=_I8)
    rank_decide(np.zeros((1, 1)), np.array([0.5]), one, np.array([0], dtype=_I8), one, np.zeros(3, dtype=_I8),
                np.array([0], dtype=_I8), np.array([0], dtype=_I8), np.zeros(1, dtype=_I8))  # fmt: skip
    lender_paths(np.zeros((1, 1), dtype=_I8), np.array([-1], dtype=_I8), np.array([0.5]), np.array([0], dtype=_I8),
                 np.array([0], dtype=_I8))  # fmt: skip
