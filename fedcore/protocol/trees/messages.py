"""Task kinds, fixed-point encoding, masks and array payloads of the hybrid tree protocol.

Payload layout: the task (or reply) parameter ``arrays`` lists ``[name, dtype, shape]`` entries; the
payload is those arrays' raw little-endian bytes, concatenated in that order. No pickle. Fixed point
(``round(x * 2^32)`` in ``Z_2^64``) and masks (ChaCha20 keystreams from a seed and a label) are
:mod:`fedcore.crypto.masks`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedcore.crypto import masks
from fedcore.crypto.masks import from_fixed as from_fixed  # re-exported: the protocol's modules take them from here
from fedcore.crypto.masks import mask_u64 as mask_u64
from fedcore.crypto.masks import to_fixed as to_fixed
from fedcore.errors import ProtocolError
from models.gbdt.histogram import GRADIENT_FRAC_BITS

SETUP, KEYS, BINS, EDGES, BEGIN, HIST, SPLIT, EVAL, FINISH = (
    "trees.setup", "trees.keys", "trees.bins", "trees.edges",
    "trees.begin", "trees.hist", "trees.split", "trees.eval", "trees.finish",
)  # fmt: skip
KINDS = (SETUP, KEYS, BINS, EDGES, BEGIN, HIST, SPLIT, EVAL, FINISH)
LENDERS_OWNER = "lenders"  # the owner of the shared-schema lender features (every lender holds their table)
FRAC_BITS = GRADIENT_FRAC_BITS  # the learner's gradient quantum: fixed point reproduces its histograms exactly
if FRAC_BITS != masks.FRAC_BITS:  # to_fixed/from_fixed's default
    raise ImportError("the tree protocol's fixed point must match fedcore.crypto.masks")
SCALE = float(1 << FRAC_BITS)
MOD128 = 1 << 128
_DTYPES = {"uint8": np.uint8, "uint64": np.uint64, "float64": np.float64, "int64": np.int64}


def mask_int128(seed: bytes, label: str, n: int) -> list[int]:
    data = hashlib.shake_256(seed + b"\x01" + label.encode()).digest(16 * n)
    words = np.frombuffer(data, dtype="<u8").reshape(n, 2)  # each 16-byte little-endian int: low word first
    return [(hi << 64) | lo for lo, hi in zip(words[:, 0].tolist(), words[:, 1].tolist(), strict=True)]


def bincount_u64(idx: np.ndarray, weights: np.ndarray, minlength: int) -> np.ndarray:
    """Per-bin sums of uint64 ``weights`` modulo 2^64, exact (numpy's unsigned addition wraps)."""
    out = np.zeros(minlength, dtype=np.uint64)
    np.add.at(out, np.asarray(idx), np.asarray(weights, dtype=np.uint64))
    return out


def bin_sums_u64(
    bins: np.ndarray, features: Sequence[int], rows: np.ndarray | None, weights: Sequence[np.ndarray], slots: int
) -> np.ndarray:
    """Sums modulo 2^64 of each uint64 weight vector per (feature, bin), shape (weights, features, slots),
    over ``rows`` of a feature-major bin matrix (None: every row; ``weights`` are already restricted to
    ``rows``). One pass per feature and weight vector, the feature's bins gathered once."""
    out = np.zeros((len(weights), len(features), slots), dtype=np.uint64)
    ws = [np.asarray(w, dtype=np.uint64) for w in weights]
    for j, f in enumerate(features):
        b = bins[f] if rows is None else bins[f][rows]
        for k, w in enumerate(ws):
            np.add.at(out[k, j], b, w)
    return out


class BinCodes:
    """The features of a feature-major bin matrix in pairs, each pair coded as one index
    ``bin_a * slots + bin_b``: one ``np.add.at`` on a ``slots^2`` table then gives both features' per-bin
    sums (its two margins), about twice as fast as a pass per feature. Built once per run and feature
    list (``n / 2`` machine words per feature); sums are modulo 2^64 and equal :func:`bin_sums_u64`'s."""

    def __init__(self, bins: np.ndarray, features: Sequence[int], slots: int) -> None:
        f = [int(x) for x in features]
        self.features = tuple(f)
        self.slots = slots
        self.pairs = [bins[f[i]].astype(np.intp) * slots + bins[f[i + 1]] for i in range(0, len(f) - 1, 2)]
        self.last = bins[f[-1]].astype(np.intp) if len(f) % 2 else None

    def sums(self, rows: np.ndarray | None, weights: Sequence[np.ndarray]) -> np.ndarray:
        """As :func:`bin_sums_u64` over ``rows`` (None: every row; ``weights`` already restricted)."""
        s = self.slots
        ws = [np.asarray(w, dtype=np.uint64) for w in weights]
        out = np.zeros((len(ws), len(self.features), s), dtype=np.uint64)
        tables = np.zeros((len(ws), len(self.pairs), s * s), dtype=np.uint64)
        for i, code in enumerate(self.pairs):
            c = code if rows is None else code[rows]
            for k, w in enumerate(ws):
                np.add.at(tables[k, i], c, w)
        if self.pairs:
            grid = tables.reshape(len(ws), len(self.pairs), s, s)
            out[:, 0 : 2 * len(self.pairs) : 2] = grid.sum(axis=3, dtype=np.uint64)
            out[:, 1 : 2 * len(self.pairs) : 2] = grid.sum(axis=2, dtype=np.uint64)
        if self.last is not None:
            c = self.last if rows is None else self.last[rows]
            for k, w in enumerate(ws):
                np.add.at(out[k, -1], c, w)
        return out


def cached_codes(
    cache: dict[str, BinCodes], key: str, bins: np.ndarray, features: Sequence[int], slots: int
) -> BinCodes:
    """``cache[key]``, the :class:`BinCodes` of ``bins`` for ``features`` (rebuilt when they change)."""
    codes = cache.get(key)
    if codes is None or codes.features != tuple(int(f) for f in features):
        codes = cache[key] = BinCodes(bins, features, slots)
    return codes


def encode_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[list[list[Any]], bytes]:
    layout: list[list[Any]] = []
    chunks: list[bytes] = []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.name not in _DTYPES:
            raise ProtocolError(f"array {name!r}: dtype {a.dtype} cannot travel")
        layout.append([name, a.dtype.name, list(a.shape)])
        chunks.append(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return layout, b"".join(chunks)


def decode_arrays(layout: Sequence[Sequence[Any]], data: bytes, what: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    offset = 0
    try:
        for name, dtype, shape in layout:
            dt = np.dtype(_DTYPES[str(dtype)]).newbyteorder("<")
            count = int(np.prod(shape)) if shape else 1
            size = count * dt.itemsize
            if offset + size > len(data):
                raise ProtocolError(f"{what}: payload too short for array {name!r}")
            out[str(name)] = np.frombuffer(data, dtype=dt, count=count, offset=offset).reshape(shape).astype(dt.type)
            offset += size
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"{what}: malformed array layout ({exc})") from None
    if offset != len(data):
        raise ProtocolError(f"{what}: {len(data) - offset} unexpected payload bytes")
    return out
