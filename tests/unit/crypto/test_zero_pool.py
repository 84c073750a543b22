"""Pooled encryptions of zero (fedcore.crypto.zero_pool): an answer from the pool decrypts to the values,
each encryption of zero is handed out once, the pool refills between requests, and what it cannot pool
(long vectors) or refuses (non-finite values) behaves as encrypt_vector."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fedcore.crypto.he import CkksSecretContext, decrypt_vector
from fedcore.crypto.zero_pool import MAX_VALUES, ZeroPool
from fedcore.errors import InvalidInput
from fedcore.protocol.scoring.messages import SCORING_CKKS


def wait_ready(pool: ZeroPool, pub, length: int, want: int) -> None:
    tick = threading.Event()
    for _ in range(30_000):  # the background thread fills the pool: wait on its state (a 5-minute hang guard)
        if pool.ready(pub, length) >= want:
            return
        assert pool._thread is not None, "the refill thread ended before the pool was full"
        tick.wait(0.01)
    raise AssertionError("the pool did not fill")


def test_pooled_answers_decrypt_to_the_values_and_each_zero_is_used_once():
    key = CkksSecretContext.generate(SCORING_CKKS)
    pub = key.public_context()
    pool = ZeroPool(depth=3, quiet_s=0.0)
    first = pool.encrypt(pub, np.array([0.25, 1.0, 0.0]))  # nothing pooled yet: encrypted directly
    assert pool.misses == 1
    wait_ready(pool, pub, 3, 3)
    a = pool.encrypt(pub, np.array([0.5, 0.0, 1.0]))
    b = pool.encrypt(pub, np.array([0.5, 0.0, 1.0]))
    assert pool.hits == 2
    assert a.to_bytes() != b.to_bytes()  # two fresh encryptions of zero, not one reused
    for vec, want in ((first, [0.25, 1.0, 0.0]), (a, [0.5, 0.0, 1.0]), (b, [0.5, 0.0, 1.0])):
        assert np.allclose(decrypt_vector(key, vec), want, atol=1e-6)


def test_long_vectors_bypass_the_pool_and_bad_values_are_refused():
    key = CkksSecretContext.generate(SCORING_CKKS)
    pub = key.public_context()
    pool = ZeroPool(quiet_s=0.0)
    long = np.arange(MAX_VALUES + 1, dtype=float)
    assert np.allclose(decrypt_vector(key, pool.encrypt(pub, long)), long, atol=1e-5)
    assert pool.hits == pool.misses == 0 and pool._thread is None  # no pool, no thread for a batch
    with pytest.raises(InvalidInput):
        pool.encrypt(pub, np.array([1.0, np.nan]))


def test_the_refill_thread_ends_when_no_key_was_used_for_keep_s():
    key = CkksSecretContext.generate(SCORING_CKKS)
    pub = key.public_context()
    pool = ZeroPool(depth=1, keep_s=0.05, quiet_s=0.0)
    pool.encrypt(pub, np.array([1.0]))
    thread = pool._thread
    assert thread is not None
    thread.join(60)  # hang guard: it ends once the key has gone unused for keep_s
    assert not thread.is_alive() and pool._thread is None and pool.ready(pub, 1) == 0
