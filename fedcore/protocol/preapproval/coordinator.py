"""The pre-approval fan-out at the coordinator: one task per named lender, answers within the budget."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from fedcore.errors import FedcreditError, InvalidInput, PermissionDenied, ProtocolError
from fedcore.protocol.channel import PartyChannel, TaskHandle
from fedcore.protocol.messages import JSONValue, Role, Task, TaskResult
from fedcore.protocol.preapproval.messages import (
    OFFER,
    SNAPSHOT,
    Offer,
    PreapprovalRequest,
    PreapprovalResult,
    Prefetched,
    SealedOffer,
    check_snapshot_date,
    offer_from_reply,
)
from fedcore.protocol.scoring.groups import ScoreGroups, Standing
from fedcore.protocol.scoring.messages import JointResponse

log = logging.getLogger(__name__)


GROUP_WINDOW_S = 0.5  # at most this long (and a third of the budget) the lenders' scores wait to be grouped
PREFETCH_SHARE = 0.6  # the prefetched sums may take this share of the budget; a lender then scores itself
MAX_STANDING = 4096  # (lender, product kind) standing requests kept


class StandingScores(Protocol):
    """The scoring fan-out's side of prefetch (:meth:`ScoringCoordinator.score_standing`)."""

    def score_standing(self, pseudonym: bytes, asks: Mapping[str, Standing],
                       deadline: float) -> dict[str, JointResponse]: ...
_WAITERS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="preapproval-wait")
# the prefetched sums run on their own threads: offer tasks waiting for them on _WAITERS cannot starve them
_PREFETCH = ThreadPoolExecutor(max_workers=64, thread_name_prefix="preapproval-prefetch")


class PreapprovalCoordinator:
    """Routes a platform's pre-approval to each named lender and returns the offers that arrive in time.

    ``on_outcome(lender, outcome)`` (optional) sees each lender's outcome (offer, decline, timeout,
    offline, an error code) for the coordinator's metrics; the platform never does. With ``groups`` (the
    scoring fan-out's, :mod:`fedcore.protocol.scoring.groups`) the asked lenders' joint scores are
    answered with one task per member. With ``scores`` (the scoring fan-out) a lender's standing request
    for the product's kind is made as soon as the request arrives, and the lender's sum travels in its
    offer task (prefetch, :mod:`fedcore.protocol.scoring.groups`).
    """

    def __init__(self, channel: PartyChannel, on_outcome: Callable[[str, str], None] | None = None,
                 groups: ScoreGroups | None = None, scores: StandingScores | None = None) -> None:
        self._channel = channel
        self._on_outcome = on_outcome
        self._groups = groups
        self._scores = scores
        self._standing: dict[tuple[str, str], Standing] = {}  # (lender, product kind) -> its standing request
        self._lock = threading.Lock()

    def request(self, platform: str, req: PreapprovalRequest) -> PreapprovalResult:
        roles = {p.name: p for p in self._channel.parties()}
        me = roles.get(platform)
        if me is None or me.role != Role.PLATFORM:
            raise PermissionDenied(f"{platform!r} is not the platform: only the platform asks for pre-approvals")
        for name in req.lenders:
            info = roles.get(name)
            if info is None or info.role != Role.LENDER:
                raise InvalidInput(f"lenders: {name!r} is not an admitted lender")
        request_id = secrets.token_hex(8)
        budget_s = req.budget_ms / 1000.0
        deadline = time.monotonic() + budget_s
        online = [name for name in req.lenders if roles[name].online]
        for name in req.lenders:
            if name not in online:
                self._note(name, "offline")
        params: dict[str, JSONValue] = {"request_id": request_id, "product": req.product.to_dict(),
                                        "budget_s": budget_s}
        if req.announcement is not None:  # seal the offer to the platform: C relays it unread
            params["platform"] = platform
            params["announcement"] = dict(req.announcement)
        ahead = self._standing_for(online, req.product.kind)
        waits: dict[str, Future[TaskResult]] = {}
        if ahead:  # the lenders' sums first, each then handed to its lender inside its offer task
            assert self._scores is not None
            sums = _PREFETCH.submit(self._scores.score_standing, req.pseudonym, ahead,
                                   time.monotonic() + PREFETCH_SHARE * budget_s)
            for name, st in ahead.items():
                waits[name] = _WAITERS.submit(self._offer_with_sum, name, st, sums, params, req.pseudonym, deadline)
        rest = [name for name in online if name not in ahead]
        if self._groups is not None:  # before the tasks: a lender may ask for its score at once
            self._groups.expect(request_id, rest, min(GROUP_WINDOW_S, budget_s / 3))
        for name in rest:
            try:
                handle = self._channel.submit(name, Task(OFFER, params, request_id, budget_s, [req.pseudonym]))
            except FedcreditError:
                self._note(name, "offline")
                self._withdraw(request_id, name)
                continue
            # each lender's answer is awaited on its own thread, so that one that ends without scoring (it
            # does not offer the product, or failed) releases the others' grouped scores at once
            waits[name] = fut = _WAITERS.submit(_await, handle, deadline)
            fut.add_done_callback(lambda _f, n=name: self._withdraw(request_id, n))  # type: ignore[misc]
        offers: list[Offer] = []
        sealed: list[SealedOffer] = []
        for name in online:
            if name not in waits:
                continue
            try:
                result = waits[name].result()
                offer = offer_from_reply(name, req.product, result.params)
            except (FedcreditError, TimeoutError) as exc:
                code = "deadline_exceeded" if isinstance(exc, TimeoutError) else exc.code
                self._note(name, code)
                continue
            self._keep_standing(name, req.product.kind, result.params)
            self._note(name, "decline" if offer is None else "offer")
            if isinstance(offer, SealedOffer):
                sealed.append(offer)
            elif offer is not None:
                offers.append(offer)
        log.info("pre-approval %s from %s: %d lenders asked, %d offers", request_id, platform,
                 len(req.lenders), len(offers) + len(sealed))
        return PreapprovalResult(request_id, tuple(offers), tuple(sealed))

    def announce_snapshot(self, platform: str, as_of: str, wait_s: float = 5.0) -> int:
        """Tell every online lender that the platform loaded a snapshot dated ``as_of`` (a lender that
        monitors a book runs a pass); the number of lenders that acknowledged within ``wait_s``."""
        check_snapshot_date(as_of)
        parties = self._channel.parties()
        me = next((p for p in parties if p.name == platform), None)
        if me is None or me.role != Role.PLATFORM:
            raise PermissionDenied(f"{platform!r} is not the platform: only the platform announces snapshots")
        deadline = time.monotonic() + wait_s
        handles: dict[str, TaskHandle] = {}
        for p in parties:
            if p.role == Role.LENDER and p.online:
                try:
                    task = Task(SNAPSHOT, {"as_of": as_of}, secrets.token_hex(8), wait_s)
                    handles[p.name] = self._channel.submit(p.name, task)
                except FedcreditError:
                    continue
        acked = 0
        for name, handle in handles.items():
            try:
                handle.result(timeout=max(0.01, deadline - time.monotonic()))
                acked += 1
            except (FedcreditError, TimeoutError) as exc:
                handle.cancel("snapshot announcement not acknowledged in time")
                log.info("snapshot announcement to %s: %s", name, exc)
        log.info("snapshot %s announced by %s to %d lenders", as_of, platform, acked)
        return acked

    def _standing_for(self, online: list[str], kind: str) -> dict[str, Standing]:
        if self._scores is None:
            return {}
        with self._lock:
            return {n: st for n in online if (st := self._standing.get((n, kind))) is not None}

    def _keep_standing(self, lender: str, kind: str, reply: Mapping[str, JSONValue]) -> None:
        """Keep (or end, when the reply names none) ``lender``'s standing request for ``kind``."""
        if self._scores is None:
            return
        try:
            st = Standing.from_params(reply["standing"], lender) if "standing" in reply else None
        except ProtocolError as exc:
            log.warning("pre-approval: %s", exc)
            st = None
        with self._lock:
            if st is None:
                self._standing.pop((lender, kind), None)
            elif len(self._standing) < MAX_STANDING or (lender, kind) in self._standing:
                self._standing[(lender, kind)] = st

    def _offer_with_sum(self, name: str, st: Standing, sums: Future[dict[str, JointResponse]],
                        params: Mapping[str, JSONValue], pseudonym: bytes, deadline: float) -> TaskResult:
        """``name``'s offer task once its prefetched sum is in (without it, if it failed or is late: the
        lender then makes its own scoring request)."""
        try:
            resp = sums.result(timeout=max(0.0, deadline - time.monotonic())).get(name)
        except TimeoutError:
            resp = None
        except Exception:  # a failed prefetch never fails the offer: the lender scores as usual
            log.exception("pre-approval %s: prefetched scores failed", params["request_id"])
            resp = None
        payload, task_params = pseudonym, dict(params)
        if resp is not None:
            task_params["joint"] = Prefetched(st, resp).to_params()
            payload = pseudonym + (resp.ciphertext or b"")
        budget_s = max(0.05, deadline - time.monotonic())
        task_params["budget_s"] = budget_s
        handle = self._channel.submit(name, Task(OFFER, task_params, str(params["request_id"]), budget_s, [payload]))
        return _await(handle, deadline)

    def _withdraw(self, request_id: str, lender: str) -> None:
        if self._groups is not None:
            self._groups.withdraw(request_id, lender)

    def _note(self, lender: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(lender, outcome)


def _await(handle: TaskHandle, deadline: float) -> TaskResult:
    try:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return handle.result(timeout=remaining)
    except (FedcreditError, TimeoutError):
        handle.cancel("pre-approval budget spent or lender failed")
        raise


class LocalPreapprovalGateway:
    """In-process gateway (tests, benchmarks): the platform's name is given (over gRPC: its certificate)."""

    def __init__(self, coordinator: PreapprovalCoordinator, platform: str) -> None:
        self.coordinator = coordinator
        self.platform = platform

    def preapprove(self, request: PreapprovalRequest) -> PreapprovalResult:
        return self.coordinator.request(self.platform, request)

    def announce_snapshot(self, as_of: str) -> int:
        return self.coordinator.announce_snapshot(self.platform, as_of)
