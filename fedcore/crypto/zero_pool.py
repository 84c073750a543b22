"""Encryptions of zero made ahead of time, so that answering a small request costs one plaintext addition
instead of a public-key encryption (about 0.4 ms against 2.4 ms for N=4096 on this machine).

CKKS public-key encryption of ``m`` *is* a fresh encryption of zero plus the encoded ``m`` (SEAL computes it
that way), so ``add_plain(<fresh encryption of 0>, v)`` has exactly the distribution of
``encrypt_vector(pub, v)`` provided each encryption of zero is used once. The pool hands each one out once
(popped, never copied) and refills in the background, for the keys and lengths asked for in the last
``keep_s`` seconds only; when a pool is empty the caller encrypts as before. The pool holds public
material only (ciphertexts of zero under other parties' public keys): nothing in it is secret.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from fedcore.crypto.he import CkksPublicContext, EncryptedVector, add_plain, encrypt_vector
from fedcore.errors import InvalidInput

MAX_VALUES = 48  # vectors up to this length are pooled (16 applicants x 3 queries); longer ones encrypt directly


class ZeroPool:
    """Per (public key, length): up to ``depth`` encryptions of zero, refilled by one background thread
    between requests (after ``quiet_s`` without one), which stops when no key was used for ``keep_s``."""

    def __init__(self, depth: int = 6, keep_s: float = 600.0, max_keys: int = 32, quiet_s: float = 0.1) -> None:
        self.depth = depth
        self.quiet_s = quiet_s  # refill only after this long without a request (never inside a burst)
        self._last_use = 0.0
        self.keep_s = keep_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, int], deque[EncryptedVector]] = {}
        self._wanted: dict[tuple[str, int], tuple[CkksPublicContext, float]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.hits = 0
        self.misses = 0

    def encrypt(self, pub: CkksPublicContext, values: np.ndarray) -> EncryptedVector:
        """``values`` under ``pub``: from a pooled encryption of zero when one is ready."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1 or len(arr) > MAX_VALUES or len(arr) == 0:
            return encrypt_vector(pub, arr)
        if not np.all(np.isfinite(arr)):
            raise InvalidInput("encrypt_vector: values must be finite (no NaN or inf)")
        key = (pub.fingerprint(), len(arr))
        with self._lock:
            self._last_use = time.monotonic()
            pool = self._pools.get(key)
            zero = pool.popleft() if pool else None
            if key in self._wanted or len(self._wanted) < self.max_keys:
                self._wanted[key] = (pub, time.monotonic())
            if zero is None:
                self.misses += 1
            else:
                self.hits += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._refill, name="zero-pool", daemon=True)
                self._thread.start()
        self._wake.set()
        return encrypt_vector(pub, arr) if zero is None else add_plain(zero, arr)

    def ready(self, pub: CkksPublicContext, length: int) -> int:
        """How many encryptions of zero are ready for ``pub`` and ``length``."""
        with self._lock:
            return len(self._pools.get((pub.fingerprint(), length), ()))

    def _refill(self) -> None:
        while True:
            self._wake.wait(timeout=self.keep_s)
            self._wake.clear()
            while True:
                job = self._next_job()
                if job is None:
                    break
                if not isinstance(job, tuple):
                    return  # nothing asked for in keep_s: the thread ends (the next request starts one)
                key, pub = job
                busy = self.quiet_s - (time.monotonic() - self._last_use)
                if busy > 0:  # requests are being answered: let them have the CPU (and the GIL)
                    time.sleep(busy)
                    continue
                zero = encrypt_vector(pub, np.zeros(key[1]))
                with self._lock:
                    if key in self._wanted:
                        self._pools.setdefault(key, deque()).append(zero)

    def _next_job(self) -> tuple[tuple[str, int], CkksPublicContext] | bool | None:
        """The next (key, context) to add one encryption of zero for; None when every pool is full,
        False when nothing is wanted any more (the thread then ends)."""
        now = time.monotonic()
        with self._lock:
            for key, (_pub, at) in list(self._wanted.items()):
                if now - at > self.keep_s:
                    del self._wanted[key]
                    self._pools.pop(key, None)
            if not self._wanted:
                self._thread = None
                return False
            for key, (pub, _at) in self._wanted.items():
                if len(self._pools.get(key, ())) < self.depth:
                    return key, pub
        return None
