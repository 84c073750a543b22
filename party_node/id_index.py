"""A map from normalized ids to integers held as sorted numpy arrays, not a dict of Python strings.

Ingest keeps two: the store's subjects of the file's id kind (id -> row id) and the file's ids seen so
far (id -> data row, for the duplicate error). Each is a few sorted runs of (fixed-width utf-8 bytes,
int64); a batch adds one run and runs of similar size are merged, so a lookup is a handful of
bisections and memory is about the ids' bytes plus 8 B each (a dict costs ~100 B more per id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

MISSING = -1


def encode_ids(ids: Sequence[str]) -> np.ndarray:
    """UTF-8 ids as a fixed-width bytes array (normalized ids never end in NUL, which numpy drops)."""
    if not len(ids):
        return np.zeros(0, dtype="S1")
    return np.array([k.encode() for k in ids], dtype=bytes)


class IdIndex:
    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(k) for k, _ in self._runs)

    @classmethod
    def from_blocks(cls, blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> IdIndex:
        idx = cls()
        for keys, vals in blocks:
            idx.add(keys, vals)
        return idx

    def add(self, keys: np.ndarray, vals: np.ndarray) -> None:
        """Add distinct ids not in the index yet."""
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        self._runs.append((keys[order], np.asarray(vals, dtype=np.int64)[order]))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            (k1, v1), (k2, v2) = self._runs.pop(), self._runs.pop()
            keys_m = np.concatenate([k2, k1])
            vals_m = np.concatenate([v2, v1])
            order = np.argsort(keys_m, kind="stable")
            self._runs.append((keys_m[order], vals_m[order]))

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The value of each id, :data:`MISSING` (-1) where absent."""
        out = np.full(len(keys), MISSING, dtype=np.int64)
        for run_keys, run_vals in self._runs:
            at = np.searchsorted(run_keys, keys)
            ok = at < len(run_keys)
            hit = np.zeros(len(keys), dtype=bool)
            hit[ok] = run_keys[at[ok]] == keys[ok]
            out[hit] = run_vals[at[hit]]
        return out
