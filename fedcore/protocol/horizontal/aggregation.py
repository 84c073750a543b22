"""Horizontal training's secure aggregation arithmetic: CKKS-encrypted weighted sums and the DP clip-and-noise."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.horizontal.messages import CIPHER_KEY, CIPHER_STYPE


def as_config_record(d: Mapping[str, Any]) -> ConfigRecord:
    return ConfigRecord(dict(d))


# ---------------------------------------------------------------------------- CKKS updates, aggregates


def pack_encrypted(data: bytes, length: int) -> ArrayRecord:
    """Carry a serialized EncryptedVector in an ArrayRecord (one Array of stype :data:`CIPHER_STYPE`)."""
    return ArrayRecord({CIPHER_KEY: Array(dtype="ckks", shape=(int(length),), stype=CIPHER_STYPE, data=data)})


def is_encrypted(record: ArrayRecord) -> bool:
    return len(record) == 1 and CIPHER_KEY in record and record[CIPHER_KEY].stype == CIPHER_STYPE


def unpack_encrypted(record: ArrayRecord) -> bytes:
    if not is_encrypted(record):
        raise ProtocolError("expected an encrypted ArrayRecord")
    return bytes(record[CIPHER_KEY].data)


def encrypt_weighted(ctx: Any, vec: np.ndarray, weight: float) -> ArrayRecord:
    """``CKKS([vec * weight, weight])`` in an ArrayRecord: summing these and dividing the first part by
    the last slot gives the weighted average."""
    from fedcore.crypto.he import encrypt_vector

    v = np.asarray(vec, dtype=np.float64).reshape(-1)
    payload = np.concatenate([v * weight, [weight]])
    if np.max(np.abs(payload)) > 2.0**17:
        raise InvalidInput("an encrypted value exceeds 2^17 (CKKS SUMS keeps |values| below 2^19): raise he_unit")
    enc = encrypt_vector(ctx, payload)
    return pack_encrypted(enc.to_bytes(), enc.length)


def sum_encrypted(public_ctx: Any, records: Sequence[ArrayRecord]) -> ArrayRecord:
    """Coordinator side: the element-wise sum of encrypted ArrayRecords (no key needed, none used)."""
    from fedcore.crypto.he import EncryptedVector, add

    if not records:
        raise InvalidInput("nothing to sum")
    vecs = [EncryptedVector.from_bytes(public_ctx, unpack_encrypted(r)) for r in records]
    total = add(vecs)
    return pack_encrypted(total.to_bytes(), total.length)


def decrypt_average(secret_ctx: Any, record: ArrayRecord) -> np.ndarray:
    """Party side: decrypt ``CKKS([sum v_i w_i, sum w_i])`` and return ``sum v_i w_i / sum w_i``."""
    from fedcore.crypto.he import EncryptedVector, decrypt_vector

    vec = decrypt_vector(secret_ctx, EncryptedVector.from_bytes(secret_ctx, unpack_encrypted(record)))
    denom = float(vec[-1])
    if not denom > 0:
        raise ProtocolError("decrypted aggregate has a non-positive total weight")
    return np.asarray(vec[:-1] / denom, dtype=np.float64)


def weights_sha256(weights: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in weights:
        a = np.ascontiguousarray(np.asarray(w, dtype=np.float32))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -------------------------------------------------------------------------------------------- DP


@dataclass(frozen=True)
class DpReport:
    """Party-level (epsilon, delta) of a run: per-round clipping ``C``, Gaussian noise ``sigma * C``."""

    epsilon: float
    delta: float
    noise_multiplier: float
    clip: float
    rounds: int
    accounting: str = field(default="RDP of the Gaussian mechanism, composed over rounds")


def clip_and_noise(
    update: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Clip the update's L2 norm to ``clip`` and add ``N(0, (noise_multiplier * clip)^2)`` per entry.
    Returns the noisy update and the norm before clipping."""
    u = np.asarray(update, dtype=np.float64)
    norm = float(np.linalg.norm(u))
    if clip > 0 and norm > clip:
        u = u * (clip / norm)
    if noise_multiplier > 0:
        u = u + rng.normal(0.0, noise_multiplier * clip, size=u.shape)
    return u, norm


def dp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon after ``rounds`` releases of a Gaussian mechanism (sensitivity ``C``, noise ``sigma * C``).

    Renyi DP of order ``a`` for one release is ``a / (2 sigma^2)`` (Mironov 2017, Prop. 7); it composes
    additively over rounds; conversion to (epsilon, delta):
    ``epsilon = min_a [R * a / (2 sigma^2) + log(1/delta) / (a - 1)]``. The neighbouring relation is
    *one party's whole update* (party-level DP: replacing all of a party's rows), since each party
    clips its whole update to ``C`` and adds its own noise before encryption.
    """
    if noise_multiplier <= 0:
        return math.inf
    if not 0 < delta < 1:
        raise InvalidInput("delta must be in (0, 1)")
    best = math.inf
    for alpha in [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 257)):
        eps = rounds * alpha / (2 * noise_multiplier**2) + math.log(1 / delta) / (alpha - 1)
        best = min(best, eps)
    return best
