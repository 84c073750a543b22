"""The pre-approval fan-out at the coordinator: one task per named lender, answers within the budget."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fedcore.errors import FedcreditError, InvalidInput, PermissionDenied
from fedcore.protocol.channel import PartyChannel, TaskHandle
from fedcore.protocol.messages import JSONValue, Role, Task, TaskResult
from fedcore.protocol.preapproval.messages import (
    OFFER,
    SNAPSHOT,
    Offer,
    PreapprovalRequest,
    PreapprovalResult,
    SealedOffer,
    check_snapshot_date,
    offer_from_reply,
)
from fedcore.protocol.scoring.groups import ScoreGroups

log = logging.getLogger(__name__)


GROUP_WINDOW_S = 0.5  # at most this long (and a third of the budget) the lenders' scores wait to be grouped
_WAITERS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="preapproval-wait")


class PreapprovalCoordinator:
    """Routes a platform's pre-approval to each named lender and returns the offers that arrive in time.

    ``on_outcome(lender, outcome)`` (optional) sees each lender's outcome (offer, decline, timeout,
    offline, an error code) for the coordinator's metrics; the platform never does. With ``groups`` (the
    scoring fan-out's, :mod:`fedcore.protocol.scoring.groups`) the asked lenders' joint scores are
    answered with one task per member.
    """

    def __init__(self, channel: PartyChannel, on_outcome: Callable[[str, str], None] | None = None,
                 groups: ScoreGroups | None = None) -> None:
        self._channel = channel
        self._on_outcome = on_outcome
        self._groups = groups

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
        handles: dict[str, TaskHandle] = {}
        online = [name for name in req.lenders if roles[name].online]
        if self._groups is not None:  # before the tasks: a lender may ask for its score at once
            self._groups.expect(request_id, online, min(GROUP_WINDOW_S, budget_s / 3))
        for name in req.lenders:
            if name not in online:
                self._note(name, "offline")
                continue
            params: dict[str, JSONValue] = {
                "request_id": request_id,
                "product": req.product.to_dict(),
                "budget_s": budget_s,
            }
            if req.announcement is not None:  # seal the offer to the platform: C relays it unread
                params["platform"] = platform
                params["announcement"] = dict(req.announcement)
            try:
                handles[name] = self._channel.submit(name, Task(OFFER, params, request_id, budget_s, [req.pseudonym]))
            except FedcreditError:
                self._note(name, "offline")
                self._withdraw(request_id, name)
        # each lender's answer is awaited on its own thread, so that one that ends without scoring (it
        # does not offer the product, or failed) releases the others' grouped scores at once
        waits = {name: _WAITERS.submit(_await, handle, deadline) for name, handle in handles.items()}
        for name, fut in waits.items():
            fut.add_done_callback(lambda _f, n=name: self._withdraw(request_id, n))  # type: ignore[misc]
        offers: list[Offer] = []
        sealed: list[SealedOffer] = []
        for name, handle in handles.items():
            try:
                result = waits[name].result()
                offer = offer_from_reply(name, req.product, result.params)
            except (FedcreditError, TimeoutError) as exc:
                handle.cancel("pre-approval budget spent or lender failed")
                code = "deadline_exceeded" if isinstance(exc, TimeoutError) else exc.code
                self._note(name, code)
                continue
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

    def _withdraw(self, request_id: str, lender: str) -> None:
        if self._groups is not None:
            self._groups.withdraw(request_id, lender)

    def _note(self, lender: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(lender, outcome)


def _await(handle: TaskHandle, deadline: float) -> TaskResult:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return handle.result(timeout=remaining)


class LocalPreapprovalGateway:
    """In-process gateway (tests, benchmarks): the platform's name is given (over gRPC: its certificate)."""

    def __init__(self, coordinator: PreapprovalCoordinator, platform: str) -> None:
        self.coordinator = coordinator
        self.platform = platform

    def preapprove(self, request: PreapprovalRequest) -> PreapprovalResult:
        return self.coordinator.request(self.platform, request)

    def announce_snapshot(self, as_of: str) -> int:
        return self.coordinator.announce_snapshot(self.platform, as_of)
