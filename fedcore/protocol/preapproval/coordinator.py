"""The pre-approval fan-out at the coordinator: one task per named lender, answers within the budget."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from fedcore.errors import FedcreditError, InvalidInput, PermissionDenied
from fedcore.protocol.channel import PartyChannel, TaskHandle
from fedcore.protocol.messages import JSONValue, Role, Task
from fedcore.protocol.preapproval.messages import (
    OFFER,
    Offer,
    PreapprovalRequest,
    PreapprovalResult,
    offer_from_reply,
)

log = logging.getLogger(__name__)


class PreapprovalCoordinator:
    """Routes a platform's pre-approval to each named lender and returns the offers that arrive in time.

    ``on_outcome(lender, outcome)`` (optional) sees each lender's outcome (offer, decline, timeout,
    offline, an error code) for the coordinator's metrics; the platform never does.
    """

    def __init__(self, channel: PartyChannel, on_outcome: Callable[[str, str], None] | None = None) -> None:
        self._channel = channel
        self._on_outcome = on_outcome

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
        for name in req.lenders:
            if not roles[name].online:
                self._note(name, "offline")
                continue
            params: dict[str, JSONValue] = {
                "request_id": request_id,
                "product": req.product.to_dict(),
                "budget_s": budget_s,
            }
            try:
                handles[name] = self._channel.submit(name, Task(OFFER, params, request_id, budget_s, [req.pseudonym]))
            except FedcreditError:
                self._note(name, "offline")
        offers: list[Offer] = []
        for name, handle in handles.items():
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                result = handle.result(timeout=remaining)
                offer = offer_from_reply(name, req.product, result.params)
            except (FedcreditError, TimeoutError) as exc:
                handle.cancel("pre-approval budget spent or lender failed")
                code = "deadline_exceeded" if isinstance(exc, TimeoutError) else exc.code
                self._note(name, code)
                continue
            self._note(name, "decline" if offer is None else "offer")
            if offer is not None:
                offers.append(offer)
        log.info("pre-approval %s from %s: %d lenders asked, %d offers", request_id, platform,
                 len(req.lenders), len(offers))
        return PreapprovalResult(request_id, tuple(offers))

    def _note(self, lender: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(lender, outcome)


class LocalPreapprovalGateway:
    """In-process gateway (tests, benchmarks): the platform's name is given (over gRPC: its certificate)."""

    def __init__(self, coordinator: PreapprovalCoordinator, platform: str) -> None:
        self.coordinator = coordinator
        self.platform = platform

    def preapprove(self, request: PreapprovalRequest) -> PreapprovalResult:
        return self.coordinator.request(self.platform, request)
