"""Task kinds, fixed-point encoding, masks and array payloads of the hybrid tree protocol.

Payload layout: the task (or reply) parameter ``arrays`` lists ``[name, dtype, shape]`` entries; the
payload is those arrays' raw little-endian bytes, concatenated in that order. No pickle. Fixed point:
``round(x * 2^32)`` as two's complement in ``Z_2^64``; masks are ChaCha20 keystreams keyed by SHA-256 of a
32-byte seed and a label, so both holders of a seed derive the same mask and nobody else can.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedcore.errors import ProtocolError
from models.gbdt.histogram import GRADIENT_FRAC_BITS

SETUP, KEYS, BINS, EDGES, BEGIN, HIST, SPLIT, EVAL, FINISH = (
    "trees.setup", "trees.keys", "trees.bins", "trees.edges",
    "trees.begin", "trees.hist", "trees.split", "trees.eval", "trees.finish",
)  # fmt: skip
KINDS = (SETUP, KEYS, BINS, EDGES, BEGIN, HIST, SPLIT, EVAL, FINISH)
LENDERS_OWNER = "lenders"  # the owner of the shared-schema lender features (every lender holds their table)
FRAC_BITS = GRADIENT_FRAC_BITS  # the learner's gradient quantum: fixed point reproduces its histograms exactly
SCALE = float(1 << FRAC_BITS)
MOD128 = 1 << 128
_DTYPES = {"uint8": np.uint8, "uint64": np.uint64, "float64": np.float64, "int64": np.int64}


def to_fixed(x: np.ndarray) -> np.ndarray:
    """float -> fixed point in Z_2^64 (uint64 view of the two's complement)."""
    return np.round(np.asarray(x, dtype=np.float64) * SCALE).astype(np.int64).view(np.uint64)


def from_fixed(u: np.ndarray) -> np.ndarray:
    return np.asarray(u, dtype=np.uint64).view(np.int64).astype(np.float64) / SCALE


def mask_u64(seed: bytes, label: str, n: int) -> np.ndarray:
    """``n`` pseudo-random uint64 from ``seed`` and ``label``: the ChaCha20 keystream under the key
    SHA-256(seed, label) (as the binning protocol's masks; a counter-mode stream, ~1 GB/s)."""
    key = hashlib.sha256(seed + b"\x00trees-mask\x00" + label.encode()).digest()
    enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return np.frombuffer(enc.update(bytes(8 * n)), dtype="<u8").astype(np.uint64)


def mask_int128(seed: bytes, label: str, n: int) -> list[int]:
    data = hashlib.shake_256(seed + b"\x01" + label.encode()).digest(16 * n)
    return [int.from_bytes(data[16 * i : 16 * i + 16], "little") for i in range(n)]


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
