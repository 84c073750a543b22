"""The lender's side of pre-approval: the ``preapproval.offer`` handler.

The handler reads the pseudonym and product, asks an :class:`OfferSource` (at a party node: joint
scoring plus the lender's pricing policy, :mod:`party_node.preapproval`) and answers offer or decline.
Every request is audited with its decision; the reply carries terms only, never a score.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Protocol

from fedcore.errors import FedcreditError, ProtocolError
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.preapproval.messages import OFFER, Product, Quote
from fedcore.protocol.scoring.messages import PSEUDONYM_BYTES
from fedcore.protocol.scoring.party import AuditSink
from fedcore.protocol.tasks import HandlerRegistry, TaskContext


class OfferSource(Protocol):
    """Decides one pre-approval: a :class:`Quote` or ``None`` (decline); ``deadline`` is monotonic."""

    def quote(self, pseudonym: bytes, product: Product, request_id: str, deadline: float) -> Quote | None: ...


class PreapprovalLender:
    """Registers ``preapproval.offer`` for a lender; decisions go to its audit log."""

    def __init__(self, source: OfferSource, audit: AuditSink | None = None) -> None:
        self._source = source
        self._audit = audit

    def register(self, registry: HandlerRegistry) -> None:
        registry.register(OFFER, self._offer)

    def _offer(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        request_id = str(params.get("request_id", ""))
        pseudonym = ctx.read_payload()
        if len(pseudonym) != PSEUDONYM_BYTES:
            raise ProtocolError(f"pre-approval payload is {len(pseudonym)} bytes, expected {PSEUDONYM_BYTES}")
        product = Product.from_dict(params.get("product") or {})
        budget_s = float(params.get("budget_s", 1.5))
        deadline = time.monotonic() + max(0.05, budget_s)
        record: dict[str, JSONValue] = {
            "request_id": request_id,
            "pseudonym_sha256": hashlib.sha256(pseudonym).hexdigest(),
            "product": product.to_dict(),
        }
        try:
            quote = self._source.quote(pseudonym, product, request_id, deadline)
        except FedcreditError as exc:
            self._log({**record, "outcome": exc.code})
            raise
        if quote is None:
            self._log({**record, "outcome": "decline"})
            return TaskReply({"decision": "decline"})
        self._log({**record, "outcome": "offer", "amount": quote.amount, "rate": quote.rate})
        return TaskReply(quote.to_params())

    def _log(self, fields: Mapping[str, JSONValue]) -> None:
        if self._audit is not None:
            self._audit.append("preapproval_offer", fields)
