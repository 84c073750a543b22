"""The requester's side of joint scoring: the key ring, the gateway to the coordinator, decryption (CKKS,
or the masked sums of small requests: :mod:`fedcore.protocol.scoring.masked`)."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedcore.crypto.envelope import EnvelopePrivateKey, EnvelopePublicKey
from fedcore.crypto.he import (
    CkksParams,
    CkksSecretContext,
    EncryptedVector,
    decrypt_vector,
)
from fedcore.errors import (
    ContextUnknown,
    InvalidInput,
    PermissionDenied,
    ProtocolError,
)
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.scoring import masked
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.masked import MASKED_MAX_VALUES, MaskSecret
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
from fedcore.protocol.scoring.trees import (
    ANNOUNCE,
    REQUESTER,
    RING,
    SCORE,
    SEED_BYTES,
    TreeInput,
    TreePlan,
    lender_tables,
    pack_tree_input,
    sealing_purpose,
    unpack_sealed_and,
)
from fedcore.protocol.sealing import open_for, seal_for, verify_announcement

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
    ca_pem: bytes | None = None  # the federation CA (tree scores check the platform's key against it)

    def joint(self, request: JointRequest) -> JointResponse:
        return self.coordinator.score(self.requester, request)


RequesterKey = CkksSecretContext | MaskSecret


class KeyRing:
    """The requester's keys, each regenerated every ``rotate_s`` seconds (``clock`` injectable): a CKKS key
    pair, and an X25519 key pair for the masked sums of requests of at most ``masked_max_values`` values
    (0: every request uses CKKS)."""

    def __init__(
        self,
        rotate_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        params: CkksParams = SCORING_CKKS,
        masked_max_values: int = MASKED_MAX_VALUES,
    ) -> None:
        if params not in ALLOWED_PARAMS:
            raise InvalidInput(f"scoring keys use one of {[p.name for p in ALLOWED_PARAMS]}")
        self.params = params
        if rotate_s <= 0:
            raise InvalidInput("key rotation interval must be > 0 s")
        self.rotate_s = rotate_s
        self._clock = clock
        self._lock = threading.Lock()
        if masked_max_values < 0:
            raise InvalidInput("masked_max_values must be >= 0")
        self.masked_max_values = masked_max_values
        self._key: CkksSecretContext | None = None
        self._born = 0.0
        self._mask: MaskSecret | None = None
        self._mask_born = 0.0
        self.rotations = 0

    def current(self) -> CkksSecretContext:
        """The CKKS key."""
        with self._lock:
            now = self._clock()
            if self._key is None or now - self._born >= self.rotate_s:
                self._key = CkksSecretContext.generate(self.params)
                self._born = now
                self.rotations += 1
            return self._key

    def mask(self) -> MaskSecret:
        """The masked-sum key."""
        with self._lock:
            now = self._clock()
            if self._mask is None or now - self._mask_born >= self.rotate_s:
                self._mask = MaskSecret.generate()
                self._mask_born = now
                self.rotations += 1
            return self._mask

    def for_values(self, count: int) -> RequesterKey:
        """The key a request of ``count`` values (pseudonyms x queries) is made under."""
        return self.mask() if count <= self.masked_max_values else self.current()

    def by_fingerprint(self, fingerprint: str) -> RequesterKey | None:
        """The current key whose fingerprint is ``fingerprint`` (a rotated-out key is gone)."""
        key: RequesterKey = self.mask() if fingerprint.startswith("mask:") else self.current()
        return key if key.fingerprint() == fingerprint else None


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
        group: str = "",
    ) -> JointOutcome:
        qs = check_queries(queries)
        packed = pseudonyms if isinstance(pseudonyms, bytes) else pack_pseudonyms(pseudonyms)
        key = self.keys.for_values(len(packed) // PSEUDONYM_BYTES * len(qs))
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
            group=group,
        )
        try:
            resp = self._gateway.joint(req)
        except ContextUnknown:
            resp = self._gateway.joint(
                JointRequest(
                    model_id, model_version, qs, packed, fp, key.public_context().serialize(), allow_partial, timeout_s,
                    group=group,
                )
            )
        with self._lock:
            self._announced.add(fp)
        return self.decode(resp, key, len(packed) // PSEUDONYM_BYTES, qs, model_version)

    @staticmethod
    def decode(resp: JointResponse, key: RequesterKey, n: int, qs: tuple[str, ...],
               model_version: str) -> JointOutcome:
        """Decrypt the coordinator's answer for ``n`` pseudonyms and queries ``qs`` under ``key``."""
        if resp.n != n or resp.queries != qs:
            raise ProtocolError("the coordinator's answer does not match the request")
        if resp.ciphertext is None:
            values = np.zeros(n * len(qs))
        elif isinstance(key, MaskSecret):
            values = masked.open_sum(key, resp.ciphertext, n * len(qs), resp.request_id, resp.contributors)
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
    """The requester's side of a tree score (:mod:`fedcore.protocol.scoring.trees`): seals a fresh seed to
    the platform's announced key (checked against the federation CA ``ca_pem``, by default the gateway's),
    sends its rotated masked tables, opens the platform's ``y`` and gets the margin ``z - y``."""

    def __init__(self, gateway: Gateway, ca_pem: bytes | None = None) -> None:
        self._gateway = gateway
        self._ca = ca_pem if ca_pem is not None else getattr(gateway, "ca_pem", None)
        self._keys: dict[str, EnvelopePublicKey] = {}
        self._lock = threading.Lock()

    def platform_key(self, platform: str, model_id: str, model_version: str, timeout_s: float = 30.0,
                     refresh: bool = False) -> EnvelopePublicKey:  # fmt: skip
        """``platform``'s envelope key from its signed announcement (asked once, then kept)."""
        with self._lock:
            key = None if refresh else self._keys.get(platform)
        if key is not None:
            return key
        if self._ca is None:
            raise PermissionDenied("no federation CA certificate to check the platform's key for tree scores")
        ask = pack_tree_input(TreeInput(ANNOUNCE, platform, np.zeros(0, dtype=np.int64)))
        resp = self._gateway.joint(JointRequest(model_id, model_version, (TREE_QUERY,), b"", "", None, False,
                                                timeout_s, ask))  # fmt: skip
        try:
            ann = json.loads(resp.ciphertext or b"null")
        except ValueError:
            raise ProtocolError("the platform's key announcement is not JSON") from None
        key = verify_announcement(self._ca, ann, platform)
        with self._lock:
            self._keys[platform] = key
        return key

    def query(
        self, pseudonyms: bytes, plan: TreePlan, columns: Mapping[str, np.ndarray], *, model_id: str,
        model_version: str, allow_partial: bool = False, timeout_s: float = 30.0,
    ) -> tuple[np.ndarray, JointResponse]:  # fmt: skip
        """Joint margins of the applicants (rows of the lender's feature ``columns``, NaN: missing), and the
        coordinator's response header. ``allow_partial`` does not apply: a tree score needs the platform."""
        n = len(pseudonyms) // PSEUDONYM_BYTES
        if any(len(v) != n for v in columns.values()):
            raise InvalidInput(f"the lender's feature columns must hold {n} applicants")
        if n > plan.max_applicants():
            raise InvalidInput(f"at most {plan.max_applicants()} applicants per tree scoring request")
        local, alpha = plan.lender_walk(columns)
        args = (pseudonyms, plan, alpha, model_id, model_version, timeout_s)
        try:
            z = self._query(*args, refresh=False)
        except PermissionDenied:  # the platform may have a new envelope key: ask for it once more
            z = self._query(*args, refresh=True)
        return local + plan.decode(z[0]), z[1]

    def _query(self, pseudonyms: bytes, plan: TreePlan, alpha: np.ndarray, model_id: str, model_version: str,
               timeout_s: float, *, refresh: bool) -> tuple[np.ndarray, JointResponse]:  # fmt: skip
        n, platform = alpha.shape[0], plan.layout.platform
        pub = self.platform_key(platform, model_id, model_version, timeout_s, refresh)
        seed, reply = secrets.token_bytes(SEED_BYTES), EnvelopePrivateKey.generate()
        purpose = sealing_purpose(model_id, model_version, hashlib.sha256(pseudonyms).hexdigest())
        sealed = seal_for(pub, seed + reply.public_key().to_bytes(), purpose, REQUESTER, platform)
        tables = memoryview(lender_tables(plan, alpha, seed).data).cast("B")  # no copy
        tree_input = pack_tree_input(TreeInput(SCORE, platform, plan.layout.sizes, sealed, tables))
        req = JointRequest(model_id, model_version, (TREE_QUERY,), pseudonyms, "", None, False, timeout_s, tree_input)
        resp = self._gateway.joint(req)
        if resp.n != n or resp.queries != (TREE_QUERY,) or resp.ciphertext is None:
            raise ProtocolError("the coordinator's answer does not match the request")
        sealed_y, z = unpack_sealed_and(resp.ciphertext)
        y = open_for(reply, sealed_y, purpose + "/reply", platform, REQUESTER)
        if len(z) != RING.itemsize * n or len(y) != RING.itemsize * n:
            raise ProtocolError("the tree score reply has the wrong length")
        return np.frombuffer(z, dtype=RING) - np.frombuffer(y, dtype=RING), resp


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))
