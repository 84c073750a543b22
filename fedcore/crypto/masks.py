"""Fixed point in ``Z_2^64`` and the pseudo-random masks that hide values in it.

Two protocols add masked values through a coordinator that must not see them: the hybrid tree
protocol's histograms (:mod:`fedcore.protocol.trees`) and masked joint-score sums
(:mod:`fedcore.protocol.scoring.masked`). Values are ``round(x * 2^frac_bits)`` as two's complement in
``Z_2^64`` (numpy's unsigned arithmetic wraps, so sums are exact modulo 2^64); a mask is the ChaCha20
keystream under the key SHA-256(seed, label), so both holders of a seed derive the same mask and nobody
else can (a counter-mode stream, about 1 GB/s).
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

FRAC_BITS = 32


def to_fixed(x: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """float -> fixed point in Z_2^64 (uint64 view of the two's complement)."""
    return np.round(np.asarray(x, dtype=np.float64) * float(1 << frac_bits)).astype(np.int64).view(np.uint64)


def from_fixed(u: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    return np.asarray(u, dtype=np.uint64).view(np.int64).astype(np.float64) / float(1 << frac_bits)


def mask_u64(seed: bytes, label: str, n: int) -> np.ndarray:
    """``n`` pseudo-random uint64 from ``seed`` and ``label``: the ChaCha20 keystream under the key
    SHA-256(seed, label)."""
    key = hashlib.sha256(seed + b"\x00fedcredit-mask\x00" + label.encode()).digest()
    enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return np.frombuffer(enc.update(bytes(8 * n)), dtype="<u8").astype(np.uint64)
