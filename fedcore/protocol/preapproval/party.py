"""The lender's side of pre-approval: the ``preapproval.offer`` handler, and ``monitoring.snapshot``.

The offer handler reads the pseudonym and product (and the joint sum the coordinator prefetched for the
lender's standing request, :mod:`fedcore.protocol.scoring.groups`), asks an :class:`OfferSource` (at a
party node: joint scoring plus the lender's pricing policy, :mod:`party_node.preapproval`) and answers
offer or decline, with the standing request for the next pre-approval of this product beside it.
Every request is audited with its decision; the reply carries terms only, never a score. When the
request carries the platform's signed envelope-key announcement, the terms are sealed to the platform
(:func:`fedcore.protocol.sealing.seal_to_peers`, purpose ``preapproval-offer/<request id>``): the
coordinator relays them unread. A decline stays a bare ``decline``.

:class:`SnapshotListener` answers the platform's snapshot announcement (its date only) by calling the
lender's trigger (at a node: a monitoring pass, :mod:`party_node.monitoring_cli`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from fedcore.errors import FedcreditError, PermissionDenied, ProtocolError
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.preapproval.messages import (
    OFFER,
    SNAPSHOT,
    Prefetched,
    Product,
    Quote,
    check_snapshot_date,
    padded_terms,
    seal_purpose,
)
from fedcore.protocol.scoring.groups import Standing
from fedcore.protocol.scoring.messages import PSEUDONYM_BYTES
from fedcore.protocol.scoring.party import AuditSink
from fedcore.protocol.sealing import PartyIdentity, seal_to_peers
from fedcore.protocol.tasks import HandlerRegistry, TaskContext


class OfferSource(Protocol):
    """Decides one pre-approval: a :class:`Quote` or ``None`` (decline); ``deadline`` is monotonic.
    ``prefetched``: the joint sum the coordinator computed for the lender's standing request, to be used
    only if it matches the lender's current key and model. :meth:`standing` is the request the lender
    lets the coordinator make ahead for the next pre-approval of this product (``None``: none)."""

    def quote(self, pseudonym: bytes, product: Product, request_id: str, deadline: float,
              prefetched: Prefetched | None = None) -> Quote | None: ...

    def standing(self, product: Product) -> Standing | None: ...


class PreapprovalLender:
    """Registers ``preapproval.offer`` for a lender; decisions go to its audit log."""

    def __init__(self, source: OfferSource, audit: AuditSink | None = None,
                 identity: PartyIdentity | None = None) -> None:
        self._source = source
        self._audit = audit
        self._identity = identity

    def register(self, registry: HandlerRegistry) -> None:
        registry.register(OFFER, self._offer)

    def _offer(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        request_id = str(params.get("request_id", ""))
        payload = ctx.read_payload()
        pseudonym, ciphertext = payload[:PSEUDONYM_BYTES], payload[PSEUDONYM_BYTES:]
        joint = params.get("joint")
        if len(pseudonym) != PSEUDONYM_BYTES or (ciphertext and joint is None):
            raise ProtocolError(f"pre-approval payload is {len(payload)} bytes, expected {PSEUDONYM_BYTES}"
                                " (and a ciphertext only with a joint sum)")
        prefetched = None if joint is None else Prefetched.from_task(joint, ciphertext)
        product = Product.from_dict(params.get("product") or {})
        budget_s = float(params.get("budget_s", 1.5))
        deadline = time.monotonic() + max(0.05, budget_s)
        record: dict[str, JSONValue] = {
            "request_id": request_id,
            "pseudonym_sha256": hashlib.sha256(pseudonym).hexdigest(),
            "product": product.to_dict(),
        }
        announcement = params.get("announcement")
        platform = str(params.get("platform", ""))
        if announcement is not None and self._identity is None:
            raise PermissionDenied("this lender has no identity to seal offers to the platform with")
        try:
            quote = self._source.quote(pseudonym, product, request_id, deadline, prefetched)
            standing = self._source.standing(product)
        except FedcreditError as exc:
            self._log({**record, "outcome": exc.code})
            raise
        # for the coordinator only (never relayed): the request it may make ahead next time
        ahead: dict[str, JSONValue] = {} if standing is None else {"standing": standing.to_params()}
        if quote is None:
            self._log({**record, "outcome": "decline"})
            return TaskReply({"decision": "decline", **ahead})
        self._log({**record, "outcome": "offer", "amount": quote.amount, "rate": quote.rate})
        if announcement is None:
            return TaskReply({**quote.to_params(), **ahead})
        assert self._identity is not None
        if not isinstance(announcement, Mapping):
            raise ProtocolError("the platform's key announcement is not an object")
        sealed = seal_to_peers(self._identity, {platform: announcement}, padded_terms(quote),
                               seal_purpose(request_id))
        return TaskReply({"decision": "offer", "sealed": dict(sealed[platform]), **ahead})

    def _log(self, fields: Mapping[str, JSONValue]) -> None:
        if self._audit is not None:
            self._audit.append("preapproval_offer", fields)


class SnapshotListener:
    """Registers ``monitoring.snapshot``: the platform loaded a snapshot dated ``as_of``; ``trigger(as_of)``
    starts whatever the lender does about it (a monitoring pass) and must not block."""

    def __init__(self, trigger: Callable[[str], None], audit: AuditSink | None = None) -> None:
        self._trigger = trigger
        self._audit = audit

    def register(self, registry: HandlerRegistry) -> None:
        registry.register(SNAPSHOT, self._snapshot)

    def _snapshot(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        as_of = check_snapshot_date(str(params.get("as_of", "")))
        if self._audit is not None:
            self._audit.append("snapshot_announced", {"as_of": as_of})
        self._trigger(as_of)
        return TaskReply({"ack": True})
