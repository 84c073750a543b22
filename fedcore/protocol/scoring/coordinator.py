"""The joint scoring driver: fans a request out to the contributors and sums their answers (CKKS
ciphertexts, or masked values for small requests: :mod:`fedcore.protocol.scoring.masked`)."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from fedcore.crypto.he import (
    EncryptedVector,
    add,
)
from fedcore.errors import (
    ContextUnknown,
    CorruptResult,
    DeadlineExceeded,
    FedcreditError,
    InvalidInput,
    PartyTaskError,
    PartyUnavailable,
    PermissionDenied,
    ProtocolError,
    RateLimited,
)
from fedcore.protocol.channel import PartyChannel, TaskHandle
from fedcore.protocol.messages import JSONValue, PartyInfo, Role, Task, TaskResult
from fedcore.protocol.scoring import masked
from fedcore.protocol.scoring import trees as tp
from fedcore.protocol.scoring.groups import Part, ScoreGroups, Standing
from fedcore.protocol.scoring.masked import MaskedPart, MaskKey
from fedcore.protocol.scoring.messages import (
    CONTRIBUTE,
    CONTRIBUTE_GROUP,
    DEFAULT_MAX_BATCH,
    DEFAULT_RATE_PER_MINUTE,
    GROUP_MAX_N,
    PSEUDONYM_BYTES,
    TREE_QUERY,
    JointRequest,
    JointResponse,
    check_queries,
    pack_group_payload,
    pack_task_payload,
    unpack_group_reply,
)
from fedcore.protocol.scoring.party import ContextCache, ScoringKey

log = logging.getLogger(__name__)


class ScoringCoordinator:
    """The coordinator's fan-out: validate, ask every other party, sum ciphertexts. Holds no key."""

    def __init__(
        self,
        channel: PartyChannel,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        requester_roles: frozenset[Role] = frozenset({Role.LENDER}),
        rate_per_minute: int = DEFAULT_RATE_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
        groups: ScoreGroups | None = None,
    ) -> None:
        self._channel = channel
        self._groups = groups  # pre-approvals in flight (fedcore.protocol.scoring.groups)
        self.max_batch = max_batch
        self.rate_per_minute = rate_per_minute
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # requester -> (applicants left, at)
        self.requester_roles = requester_roles
        self._contexts = ContextCache(64)
        self._sent: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def score(self, requester: str, req: JointRequest) -> JointResponse:
        queries = check_queries(req.queries)
        if len(req.pseudonyms) % PSEUDONYM_BYTES:
            raise InvalidInput(f"pseudonyms must be {PSEUDONYM_BYTES} bytes each")
        n = req.n
        if n > self.max_batch:
            raise InvalidInput(f"batch of {n} applicants is over the limit of {self.max_batch} per request")
        if not (0 < req.timeout_s <= 3600):
            raise InvalidInput("timeout_s must be in (0, 3600]")
        parties = self._channel.parties()  # once per request: at a coordinator, a registry read
        role = next((p.role for p in parties if p.name == requester), None)
        if role not in self.requester_roles:
            raise PermissionDenied(f"{requester!r} ({role}) may not request joint scores")
        if queries == (TREE_QUERY,):
            return self._score_tree(requester, req)
        if n == 0:
            raise InvalidInput("a scoring request needs at least one pseudonym")
        self._take(requester, n)
        pub = self._contexts.resolve(req.fingerprint, req.public_context)
        length = n * len(queries)
        if req.tree_input is not None:
            raise InvalidInput("only a 'tree' query carries a tree input")
        request_id = secrets.token_hex(8)
        others = [p for p in parties if p.name != requester]
        missing = [p.name for p in others if not p.online]
        if missing and not req.allow_partial:
            raise PartyUnavailable(missing[0], "offline; the request did not allow a partial score")
        params: dict[str, JSONValue] = {
            "request_id": request_id,
            "model_id": req.model_id,
            "model_version": req.model_version,
            "queries": list(queries),
            "n": n,
            "fingerprint": pub.fingerprint(),
        }
        deadline = time.monotonic() + req.timeout_s
        if req.group and self._groups is not None and n <= GROUP_MAX_N:
            part = Part(requester, req, pub, params, deadline)
            grouped, parts = self._groups.join(req.group, part)
            if grouped:
                return self._grouped(part, parts, parties)
        handles: dict[str, TaskHandle] = {}
        for p in others:
            if p.online:
                try:
                    handles[p.name] = self._submit(p.name, params, req.pseudonyms, pub, deadline, resend=False)
                except PartyUnavailable:
                    if not req.allow_partial:
                        self._cancel(handles)
                        raise
                    missing.append(p.name)
        vectors: list[Contribution] = []
        try:
            for name, handle in handles.items():
                try:
                    data = self._result(name, handle, params, req.pseudonyms, pub, deadline)
                except (PartyUnavailable, DeadlineExceeded):
                    if not req.allow_partial:
                        raise
                    missing.append(name)
                    continue
                try:
                    vectors.append(_contribution(name, pub, data, length))
                except CorruptResult as exc:
                    log.warning("scoring request %s: %s", request_id, exc)
                    if not req.allow_partial:
                        raise
                    missing.append(name)
        except BaseException:
            self._cancel(handles)
            raise
        total = _total(vectors)
        log.info(
            "scoring request %s from %s: n=%d queries=%s contributors=%d missing=%s",
            request_id,
            requester,
            n,
            ",".join(queries),
            len(vectors),
            ",".join(missing) or "-",
        )
        return JointResponse(request_id, n, queries, total, len(vectors), tuple(sorted(missing)))

    def score_standing(self, pseudonym: bytes, asks: Mapping[str, Standing],
                       deadline: float) -> dict[str, JointResponse]:
        """The lenders' standing requests (:class:`~fedcore.protocol.scoring.groups.Standing`) for one
        pseudonym, made by the coordinator on their behalf as one grouped task per member; each answer as
        :meth:`score` would give it with ``allow_partial``. A lender whose request cannot be made here (no
        longer a requester, over its rate limit, its key's context not cached) or whose part failed is
        absent: its offer falls back to its own call. ``deadline`` is monotonic."""
        if len(pseudonym) != PSEUDONYM_BYTES:
            raise InvalidInput(f"a standing request scores one pseudonym of {PSEUDONYM_BYTES} bytes")
        parties = self._channel.parties()
        roles = {p.name: p.role for p in parties}
        parts: list[Part] = []
        timeout = max(0.05, deadline - time.monotonic())
        for name, st in asks.items():
            if roles.get(name) not in self.requester_roles:
                continue
            try:
                pub = self._contexts.resolve(st.fingerprint, None)
                self._take(name, 1)
            except (ContextUnknown, RateLimited) as exc:
                log.info("standing scoring request of %s not made: %s", name, exc.code)
                continue
            req = JointRequest(st.model_id, st.model_version, st.queries, pseudonym, st.fingerprint, None, True,
                               timeout)
            params: dict[str, JSONValue] = {"request_id": secrets.token_hex(8), "model_id": st.model_id,
                                            "model_version": st.model_version, "queries": list(st.queries),
                                            "n": 1, "fingerprint": st.fingerprint}
            parts.append(Part(name, req, pub, params, deadline))
        if parts:
            try:
                self._fan_group(parts, parties)
            except FedcreditError as exc:
                log.warning("standing scoring requests failed: %s", exc.code)
        return {pt.requester: pt.response for pt in parts if pt.response is not None}

    def _grouped(self, part: Part, parts: list[Part] | None, parties: list[PartyInfo]) -> JointResponse:
        """``part``'s answer from its group's fan-out: run it here (``parts``) or wait for the thread
        that does."""
        if parts is not None:
            try:
                self._fan_group(parts, parties)
            except BaseException as exc:  # every waiting member gets the failure, not a hang
                for pt in parts:
                    if pt.response is None and pt.error is None:
                        pt.error = exc
            finally:
                for pt in parts:
                    pt.done.set()
        if not part.done.wait(max(0.01, part.deadline - time.monotonic())):
            raise DeadlineExceeded(f"scoring request {part.params['request_id']}: its group did not finish in time")
        if part.error is not None:
            raise part.error
        assert part.response is not None
        return part.response

    def _fan_group(self, parts: list[Part], parties: list[PartyInfo]) -> None:
        """One :data:`CONTRIBUTE_GROUP` task per online member, holding every part but its own; each part
        summed and answered as an ungrouped request would be (:mod:`fedcore.protocol.scoring.groups`)."""
        pseudonyms = parts[0].req.pseudonyms
        deadline = max(pt.deadline for pt in parts)
        vectors: list[list[Contribution]] = [[] for _ in parts]
        missing = [[p.name for p in parties if not p.online and p.name != pt.requester] for pt in parts]
        errors: list[BaseException | None] = [None] * len(parts)

        def fail(i: int, party: str, exc: FedcreditError) -> None:
            partial = isinstance(exc, (PartyUnavailable, DeadlineExceeded, CorruptResult))
            if partial and parts[i].req.allow_partial:
                missing[i].append(party)
            elif errors[i] is None:
                errors[i] = exc

        plan: dict[str, list[int]] = {}
        handles: dict[str, TaskHandle] = {}
        for p in parties:
            idx = [i for i, pt in enumerate(parts) if pt.requester != p.name]
            if not p.online or not idx:
                continue
            plan[p.name] = idx
            try:
                handles[p.name] = self._submit_group(p.name, [parts[i] for i in idx], pseudonyms, deadline)
            except PartyUnavailable as exc:
                for i in idx:
                    fail(i, p.name, exc)
        try:
            for name, handle in handles.items():
                idx = plan[name]
                try:
                    res = handle.result(timeout=max(0.01, deadline - time.monotonic()))
                    blobs = unpack_group_reply(res.read_payload(), len(idx))
                    outcomes = res.params.get("outcomes")
                    if not isinstance(outcomes, list) or len(outcomes) != len(idx):
                        raise ProtocolError("grouped reply has the wrong number of outcomes")
                except ProtocolError as exc:
                    for i in idx:
                        fail(i, name, CorruptResult(name, CONTRIBUTE_GROUP, str(exc)))
                    continue
                except FedcreditError as exc:
                    for i in idx:
                        fail(i, name, exc)
                    continue
                for i, outcome, blob in zip(idx, outcomes, blobs, strict=True):
                    pt = parts[i]
                    try:
                        if outcome == ContextUnknown.code:  # the member restarted: this part once more, alone
                            with self._lock:
                                self._sent.get(name, set()).discard(pt.pub.fingerprint())
                            again = self._submit(name, pt.params, pseudonyms, pt.pub, pt.deadline, resend=True)
                            blob = again.result(timeout=max(0.01, pt.deadline - time.monotonic())).read_payload()
                        elif outcome != "ok":
                            raise PartyTaskError(name, CONTRIBUTE, str(outcome), "grouped contribution failed")
                        vectors[i].append(_contribution(name, pt.pub, blob, pt.req.n * len(pt.req.queries)))
                    except FedcreditError as exc:
                        fail(i, name, exc)
        except BaseException:
            self._cancel(handles)
            raise
        for i, pt in enumerate(parts):
            rid = str(pt.params["request_id"])
            if errors[i] is not None:
                pt.error = errors[i]
                continue
            total = _total(vectors[i])
            log.info("scoring request %s from %s (grouped, %d parts): n=%d contributors=%d missing=%s", rid,
                     pt.requester, len(parts), pt.req.n, len(vectors[i]), ",".join(missing[i]) or "-")
            pt.response = JointResponse(rid, pt.req.n, tuple(pt.req.queries), total, len(vectors[i]),
                                        tuple(sorted(missing[i])))

    def _submit_group(self, party: str, parts: list[Part], pseudonyms: bytes, deadline: float) -> TaskHandle:
        contexts: list[bytes | None] = []
        with self._lock:
            known = self._sent.setdefault(party, set())
            for pt in parts:
                contexts.append(None if pt.pub.fingerprint() in known else pt.pub.serialize())
        task_id = secrets.token_hex(8)
        params: dict[str, JSONValue] = {"request_id": task_id, "n": parts[0].req.n,
                                        "parts": [dict(pt.params) for pt in parts]}
        payload = pack_group_payload(pseudonyms, contexts)
        timeout = max(0.05, deadline - time.monotonic())
        handle = self._channel.submit(party, Task(CONTRIBUTE_GROUP, params, task_id, timeout, [payload]))
        with self._lock:
            for pt, c in zip(parts, contexts, strict=True):
                if c is not None:
                    self._sent[party].add(pt.pub.fingerprint())
        return handle

    def _score_tree(self, requester: str, req: JointRequest) -> JointResponse:
        """A tree score (:mod:`fedcore.protocol.scoring.trees`): relay the sealed input to the platform
        only, add its picks of the requester's masked tables and a fresh mask ``s``."""
        spec = tp.unpack_tree_input(req.tree_input or b"")
        target = next((p for p in self._channel.parties() if p.name == spec.platform), None)
        if target is None or spec.platform == requester:
            raise InvalidInput(f"tree scoring names {spec.platform!r}, which is not another party here")
        if not target.online:
            raise PartyUnavailable(spec.platform, "offline; a tree score needs the platform's splits")
        request_id, n = secrets.token_hex(8), req.n
        params: dict[str, JSONValue] = {"request_id": request_id, "model_id": req.model_id, "n": n,
                                        "model_version": req.model_version, "queries": [TREE_QUERY]}  # fmt: skip
        if spec.kind == tp.ANNOUNCE:
            if n:
                raise InvalidInput("a tree key request carries no pseudonym")
            res = self._tree_task(spec.platform, {**params, "step": "announce"}, b"", b"", req.timeout_s)
            ann = res.params.get("announcement")
            return JointResponse(request_id, 0, (TREE_QUERY,), json.dumps(ann).encode(), 1)
        width = int(spec.sizes.sum())
        if n == 0 or len(spec.tables) != tp.RING.itemsize * n * width:
            raise InvalidInput(f"tree input must hold {n} applicants x {width} region leaves ({tp.RING})")
        if len(spec.tables) > tp.MAX_TABLE_BYTES:
            raise InvalidInput(f"tree input of {len(spec.tables)} bytes is over {tp.MAX_TABLE_BYTES} per request")
        self._take(requester, n)
        seed_s = secrets.token_bytes(tp.SEED_BYTES)
        params |= {"seed_s": seed_s.hex(), "layout": tp.layout_digest(spec.sizes)}
        res = self._tree_task(spec.platform, params, req.pseudonyms, spec.sealed, req.timeout_s)
        try:
            sealed_y, picks = tp.unpack_sealed_and(res.read_payload())
            chat = np.frombuffer(picks, dtype=tp.picks_dtype(spec.sizes)).reshape(n, len(spec.sizes))
            tables = np.frombuffer(spec.tables, dtype=tp.RING).reshape(n, width)
            z = tp.coordinator_sum(spec.sizes, tables, chat, tp.prg(seed_s, "s", n))
        except (ProtocolError, ValueError) as exc:
            raise CorruptResult(spec.platform, CONTRIBUTE, str(exc)) from None
        log.info("tree scoring request %s from %s: n=%d", request_id, requester, n)
        return JointResponse(request_id, n, (TREE_QUERY,), tp.pack_sealed_and(sealed_y, z.tobytes()), 1)

    def _tree_task(self, party: str, params: dict[str, JSONValue], pseudonyms: bytes, sealed: bytes,
                   timeout_s: float) -> TaskResult:  # fmt: skip
        payload = pack_task_payload(pseudonyms, None, sealed)
        handle = self._channel.submit(party, Task(CONTRIBUTE, params, str(params["request_id"]), timeout_s, [payload]))
        try:
            return handle.result(timeout=timeout_s)
        except PartyTaskError as exc:
            if exc.kind == PermissionDenied.code:  # typed, so that the requester can fetch a new key
                raise PermissionDenied(f"party {party!r} refused the tree scoring input: {exc.detail}") from None
            raise
        except BaseException:
            handle.cancel("scoring request failed")
            raise

    def _take(self, requester: str, n: int) -> None:
        """Per-requester token bucket of applicants: ``rate_per_minute`` at most, refilled continuously.
        It bounds how fast one lender can test guessed ids against the federation."""
        if self.rate_per_minute <= 0:
            return
        now = self._clock()
        with self._lock:
            left, at = self._buckets.get(requester, (float(self.rate_per_minute), now))
            left = min(float(self.rate_per_minute), left + (now - at) * self.rate_per_minute / 60.0)
            if n > left:
                self._buckets[requester] = (left, now)
                raise RateLimited(
                    f"{requester!r} is over its scoring limit of {self.rate_per_minute} applicants per minute"
                )
            self._buckets[requester] = (left - n, now)

    def _submit(
        self,
        party: str,
        params: Mapping[str, JSONValue],
        pseudonyms: bytes,
        pub: ScoringKey,
        deadline: float,
        *,
        resend: bool,
    ) -> TaskHandle:
        fp = pub.fingerprint()
        with self._lock:
            known = fp in self._sent.setdefault(party, set())
        send_ctx = resend or not known
        payload = pack_task_payload(pseudonyms, pub.serialize() if send_ctx else None)
        timeout = max(0.05, deadline - time.monotonic())
        handle = self._channel.submit(party, Task(CONTRIBUTE, dict(params), params["request_id"], timeout, [payload]))
        if send_ctx:
            with self._lock:
                self._sent[party].add(fp)
        return handle

    def _result(
        self,
        name: str,
        handle: TaskHandle,
        params: Mapping[str, JSONValue],
        pseudonyms: bytes,
        pub: ScoringKey,
        deadline: float,
    ) -> bytes:
        try:
            return handle.result(timeout=max(0.01, deadline - time.monotonic())).read_payload()
        except PartyTaskError as exc:
            if exc.kind != ContextUnknown.code:
                raise
        # the party lost its cached context (restarted): send it once more, with the context
        with self._lock:
            self._sent.get(name, set()).discard(pub.fingerprint())
        handle = self._submit(name, params, pseudonyms, pub, deadline, resend=True)
        return handle.result(timeout=max(0.01, deadline - time.monotonic())).read_payload()

    @staticmethod
    def _cancel(handles: Mapping[str, TaskHandle]) -> None:
        for h in handles.values():
            h.cancel("scoring request failed")


Contribution = EncryptedVector | MaskedPart


def _contribution(party: str, pub: ScoringKey, data: bytes, length: int) -> Contribution:
    """Parse one contributor's answer; anything that does not fit is that party's CorruptResult."""
    if isinstance(pub, MaskKey):
        try:
            return masked.parse_contribution(data, length)
        except ProtocolError as exc:
            raise CorruptResult(party, CONTRIBUTE, str(exc)) from None
    try:
        vec = EncryptedVector.from_bytes(pub, data, max_length=length)
    except ProtocolError as exc:
        raise CorruptResult(party, CONTRIBUTE, str(exc)) from None
    if vec.length != length:
        raise CorruptResult(party, CONTRIBUTE, f"{vec.length} values, expected {length}")
    return vec


def _total(items: list[Contribution]) -> bytes | None:
    """The sum of the contributors' answers (all under one key, so all of one kind); None if none came."""
    if not items:
        return None
    parts = [c for c in items if isinstance(c, MaskedPart)]
    if parts:
        return masked.total(parts)
    return add([c for c in items if isinstance(c, EncryptedVector)]).to_bytes()
