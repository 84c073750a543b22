"""Vertical training's numerics: per-slot masks, fixed-point sums, the batch plan, CKKS vector helpers, the scaler."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedcore.crypto import he
from fedcore.errors import InvalidInput
from fedcore.protocol.vertical.messages import CLIP, LOSS_DEGREE, LOSS_U_BOUND, MASK

log = logging.getLogger(__name__)


# ---- masks -----------------------------------------------------------------------------------------


def uniform_masks(n: int, stream: bytes | None = None) -> np.ndarray:
    """``n`` values uniform in [-MASK, MASK]: from os.urandom, or from SHAKE-256(stream) when given."""
    raw = os.urandom(8 * n) if stream is None else hashlib.shake_256(stream).digest(8 * n)
    u = (np.frombuffer(raw, dtype="<u8") >> np.uint64(11)).astype(np.float64) * 2.0**-53
    out: np.ndarray = (2.0 * u - 1.0) * MASK
    return out


def _seed_stream(seed: bytes, *label: object) -> bytes:
    return seed + b"|" + "|".join(str(x) for x in label).encode()


# ---- batch plan (every party derives the same plan from counts and the run seed) --------------------


def split_rows(n: int, val_fraction: float, seed: int, lender_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions) of a lender's aligned table."""
    perm = np.random.default_rng([seed, lender_index, 7]).permutation(n)
    n_val = math.ceil(val_fraction * n) if val_fraction > 0 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def batch_rows(train: np.ndarray, steps: int, seed: int, lender_index: int, epoch: int, step: int) -> np.ndarray:
    order = np.random.default_rng([seed, lender_index, epoch, 11]).permutation(len(train))
    return np.asarray(train[np.array_split(order, steps)[step]])


def batch_sizes(n_train: int, steps: int) -> list[int]:
    return [len(a) for a in np.array_split(np.arange(n_train), steps)]


# ---- the party's data -----------------------------------------------------------------------------


SLOTS = he.DOT.slots


def _pad(a: np.ndarray) -> np.ndarray:
    """``a`` padded with zeros to a whole number of ciphertexts (at least one)."""
    out = np.zeros(max(1, math.ceil(len(a) / SLOTS)) * SLOTS)
    out[: len(a)] = a
    return out


def _fold(v: he.EncryptedVector) -> he.EncryptedVector:
    """Slot-wise sum of a padded vector's ciphertexts: one ciphertext with the same total over slots
    (masked, serialized and decrypted once instead of once per ciphertext)."""
    acc = v.ciphertexts[0] + v.ciphertexts[1] if len(v.ciphertexts) > 1 else v.ciphertexts[0]
    for ct in v.ciphertexts[2:]:
        acc.add_(ct)
    return he.EncryptedVector((acc,), acc.size(), v.context_fingerprint)


def _add_plain(v: he.EncryptedVector, plain: np.ndarray) -> he.EncryptedVector:
    """Element-wise ``[[v]] + plain`` (plain float vector of ``v``'s length); keeps the level."""
    arr = np.asarray(plain, dtype=np.float64)
    if arr.shape != (v.length,):
        raise InvalidInput(f"plain vector has shape {arr.shape}, expected ({v.length},)")
    cts, pos = [], 0
    for ct in v.ciphertexts:
        n = ct.size()
        cts.append(ct + arr[pos : pos + n].tolist())
        pos += n
    return he.EncryptedVector(tuple(cts), v.length, v.context_fingerprint)


def _standardizer(n: float, s1: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = max(float(n), 1.0)
    mean = np.asarray(s1, float) / n
    var = np.maximum(np.asarray(s2, float) / n - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std < 1e-9 * np.maximum(1.0, np.abs(mean)), 1.0, std)
    return mean, std


def _standardize(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip((np.asarray(X, float) - mean) / std, -CLIP, CLIP))


# ---- the exact validation loss, separated into a lender part and a platform part -------------------


def loss_coefficients(c: np.ndarray, y: np.ndarray, bound: float = LOSS_U_BOUND,
                      degree: int = LOSS_DEGREE) -> np.ndarray:
    """The lender's side of the exact logistic loss ``l(c + u) = softplus(c + u) - y (c + u)``: per row,
    the Chebyshev coefficients ``a_k`` of ``t -> l(c + bound * t)`` on ``[-1, 1]`` (interpolation at the
    ``degree + 1`` Chebyshev nodes), so that ``l(c + u) = sum_k a_k T_k(u / bound)`` for ``|u| <= bound``
    with an error below 1e-6 at the defaults (softplus is analytic within pi of the real axis). Returns
    the coefficients k-major and flattened (``a_0`` of every row, then ``a_1``, ...)."""
    k = np.arange(degree + 1)
    theta = np.pi * (k + 0.5) / (degree + 1)
    t = np.cos(theta)
    z = np.asarray(c, float)[:, None] + bound * t[None, :]
    f = np.logaddexp(0.0, z) - np.asarray(y, float)[:, None] * z
    a = (2.0 / (degree + 1)) * f @ np.cos(np.outer(k, theta)).T
    a[:, 0] /= 2.0
    return np.asarray(a.T.ravel())


def loss_basis(u: np.ndarray, bound: float = LOSS_U_BOUND, degree: int = LOSS_DEGREE) -> np.ndarray:
    """The platform's side: ``T_k(clip(u) / bound)`` in :func:`loss_coefficients`' layout (the dot product
    of the two is the summed exact loss)."""
    t = np.clip(np.asarray(u, float) / bound, -1.0, 1.0)
    return np.asarray(np.cos(np.outer(np.arange(degree + 1), np.arccos(t))).ravel())


def score_slices(slices: Sequence[Mapping[str, Any]], Xs: Sequence[np.ndarray]) -> np.ndarray:
    """Joint logit from slices and each party's raw feature matrix (for tests and local checks)."""
    z = np.zeros(len(Xs[0]))
    for sl, X in zip(slices, Xs, strict=True):
        Z = _standardize(X, np.asarray(sl["scaler"]["mean"]), np.asarray(sl["scaler"]["std"]))
        z += Z @ np.asarray(sl["weights"], float) + float(sl.get("intercept", 0.0))
    return z


# ---- coordinator side ------------------------------------------------------------------------------
