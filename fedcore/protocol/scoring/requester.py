"""The requester's side of joint scoring: the key ring, the gateway to the coordinator, decryption."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedcore.crypto.he import (
    CkksParams,
    CkksSecretContext,
    EncryptedVector,
    decrypt_vector,
    encrypt_vector,
)
from fedcore.errors import (
    ContextUnknown,
    InvalidInput,
    ProtocolError,
)
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.messages import (
    ALLOWED_PARAMS,
    PSEUDONYM_BYTES,
    SCORING_CKKS,
    TREE_QUERY,
    JointRequest,
    JointResponse,
    check_queries,
    pack_pseudonyms,
)
from fedcore.protocol.scoring.trees import TREE_CKKS, margins

log = logging.getLogger(__name__)


# ---- requester side -----------------------------------------------------------------------------


class Gateway(Protocol):
    """How a requester reaches the coordinator's fan-out (in process, or the ``Scoring/Score`` RPC)."""

    def joint(self, request: JointRequest) -> JointResponse: ...


@dataclass
class LocalGateway:
    """In-process gateway: the requester's name is given (over gRPC it comes from the mTLS cert)."""

    coordinator: ScoringCoordinator
    requester: str

    def joint(self, request: JointRequest) -> JointResponse:
        return self.coordinator.score(self.requester, request)


class KeyRing:
    """The requester's CKKS key pair, regenerated every ``rotate_s`` seconds (``clock`` injectable)."""

    def __init__(
        self,
        rotate_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        params: CkksParams = SCORING_CKKS,
    ) -> None:
        if params not in ALLOWED_PARAMS:
            raise InvalidInput(f"scoring keys use one of {[p.name for p in ALLOWED_PARAMS]}")
        self.params = params
        if rotate_s <= 0:
            raise InvalidInput("key rotation interval must be > 0 s")
        self.rotate_s = rotate_s
        self._clock = clock
        self._lock = threading.Lock()
        self._key: CkksSecretContext | None = None
        self._born = 0.0
        self.rotations = 0

    def current(self) -> CkksSecretContext:
        with self._lock:
            now = self._clock()
            if self._key is None or now - self._born >= self.rotate_s:
                self._key = CkksSecretContext.generate(self.params)
                self._born = now
                self.rotations += 1
            return self._key


@dataclass(frozen=True)
class JointOutcome:
    """Decrypted results for one request, one value per pseudonym (None for queries not asked)."""

    request_id: str
    external_logit: np.ndarray | None
    blacklist_hits: np.ndarray | None
    active_loans: np.ndarray | None
    contributors: int
    missing: tuple[str, ...] = ()
    model_version: str = ""
    extra: dict[str, JSONValue] = field(default_factory=dict)


class Requester:
    """The requester's side: encrypt nothing, send pseudonyms + public context, decrypt the sum."""

    def __init__(self, gateway: Gateway, keys: KeyRing | None = None) -> None:
        self._gateway = gateway
        self.keys = keys or KeyRing()
        self._announced: set[str] = set()
        self._lock = threading.Lock()

    def query(
        self,
        pseudonyms: Sequence[bytes] | bytes,
        *,
        model_id: str,
        model_version: str,
        queries: Sequence[str] = ("score",),
        allow_partial: bool = False,
        timeout_s: float = 30.0,
    ) -> JointOutcome:
        qs = check_queries(queries)
        packed = pseudonyms if isinstance(pseudonyms, bytes) else pack_pseudonyms(pseudonyms)
        key = self.keys.current()
        fp = key.fingerprint()
        with self._lock:
            first = fp not in self._announced
        req = JointRequest(
            model_id,
            model_version,
            qs,
            packed,
            fp,
            key.public_context().serialize() if first else None,
            allow_partial,
            timeout_s,
        )
        try:
            resp = self._gateway.joint(req)
        except ContextUnknown:
            resp = self._gateway.joint(
                JointRequest(
                    model_id, model_version, qs, packed, fp, key.public_context().serialize(), allow_partial, timeout_s
                )
            )
        with self._lock:
            self._announced.add(fp)
        n = len(packed) // PSEUDONYM_BYTES
        if resp.n != n or resp.queries != qs:
            raise ProtocolError("the coordinator's answer does not match the request")
        if resp.ciphertext is None:
            values = np.zeros(n * len(qs))
        else:
            vec = EncryptedVector.from_bytes(key, resp.ciphertext, max_length=n * len(qs))
            if vec.length != n * len(qs):
                raise ProtocolError("the coordinator's answer has the wrong length")
            values = decrypt_vector(key, vec)
        out: dict[str, np.ndarray] = {q: values[i * n : (i + 1) * n] for i, q in enumerate(qs)}

        def counts(q: str) -> np.ndarray | None:
            v = out.get(q)
            return None if v is None else np.clip(np.rint(v), 0, None).astype(np.int64)

        return JointOutcome(
            resp.request_id,
            out.get("score"),
            counts("blacklist"),
            counts("loans"),
            resp.contributors,
            resp.missing,
            model_version,
        )


class TreeRequester:
    """The requester's side of a tree score (:mod:`fedcore.protocol.scoring.trees`): sends its encrypted
    reachable leaf values, decrypts the masked sum. Its own CKKS key (the DOT preset: one multiplication)."""

    def __init__(self, gateway: Gateway, rotate_s: float = 3600.0) -> None:
        self._gateway = gateway
        self.keys = KeyRing(rotate_s, params=TREE_CKKS)

    def query(
        self, pseudonyms: bytes, w: np.ndarray, base_score: float, *, model_id: str, model_version: str,
        allow_partial: bool = False, timeout_s: float = 30.0,
    ) -> tuple[np.ndarray, JointResponse]:  # fmt: skip
        """Joint margins of the applicants (rows of ``w``), and the coordinator's response header."""
        key = self.keys.current()
        n = len(pseudonyms) // PSEUDONYM_BYTES
        if w.ndim != 2 or w.shape[0] != n:
            raise InvalidInput(f"tree input must be {n} applicants x leaves, got shape {w.shape}")
        tree_input = encrypt_vector(key.public_context(), w.ravel()).to_bytes()
        pub = key.public_context().serialize()  # a tree request always carries its context (DOT is rare)
        req = JointRequest(model_id, model_version, (TREE_QUERY,), pseudonyms, key.fingerprint(), pub,
                           allow_partial, timeout_s, tree_input)  # fmt: skip
        resp = self._gateway.joint(req)
        if resp.n != n or resp.queries != (TREE_QUERY,):
            raise ProtocolError("the coordinator's answer does not match the request")
        return margins(key, resp.ciphertext, w, base_score), resp


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


