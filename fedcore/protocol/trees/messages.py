"""Task kinds, fixed-point encoding, masks and array payloads of the hybrid tree protocol.

Payload layout: the task (or reply) parameter ``arrays`` lists ``[name, dtype, shape]`` entries; the
payload is those arrays' raw little-endian bytes, concatenated in that order. No pickle. Fixed point:
``round(x * 2^32)`` as two's complement in ``Z_2^64``; masks are SHAKE-256 output over a 32-byte seed
and a label, so both holders of a seed derive the same mask and nobody else can.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
    """``n`` pseudo-random uint64 from ``seed`` and ``label`` (SHAKE-256)."""
    data = hashlib.shake_256(seed + b"\x00" + label.encode()).digest(8 * n)
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def mask_int128(seed: bytes, label: str, n: int) -> list[int]:
    data = hashlib.shake_256(seed + b"\x01" + label.encode()).digest(16 * n)
    return [int.from_bytes(data[16 * i : 16 * i + 16], "little") for i in range(n)]


def bincount_u64(idx: np.ndarray, weights: np.ndarray, minlength: int) -> np.ndarray:
    """Per-bin sums of uint64 ``weights`` modulo 2^64, exact: limbs summed in float64 stay below 2^53
    (two 32-bit limbs up to 2^21 rows, else four 16-bit limbs)."""
    w = np.asarray(weights, dtype=np.uint64)
    bits = 32 if len(w) <= 1 << 21 else 16
    out = np.zeros(minlength, dtype=np.uint64)
    low = np.uint64((1 << bits) - 1)
    for k in range(64 // bits):
        limb = ((w >> np.uint64(bits * k)) & low).astype(np.float64)
        part = np.bincount(idx, weights=limb, minlength=minlength).astype(np.uint64)
        out += part << np.uint64(bits * k)
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
