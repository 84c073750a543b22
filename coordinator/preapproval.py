"""The coordinator's ``Preapproval/Request`` RPC: the platform's node asks the named lenders for offers
(:class:`~fedcore.protocol.preapproval.coordinator.PreapprovalCoordinator` on the party links).
What the coordinator learns is documented in :mod:`fedcore.protocol.preapproval`."""

from __future__ import annotations

import grpc
from fedcredit.v1 import preapproval_pb2, preapproval_pb2_grpc

from fedcore import telemetry
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.preapproval.coordinator import PreapprovalCoordinator
from fedcore.protocol.preapproval.messages import DEFAULT_BUDGET_MS, Offer, PreapprovalRequest, Product
from fedcore.wire.errors import abort

from .auth import identity_of
from .state import StateStore

SERVICE = preapproval_pb2.DESCRIPTOR.services_by_name["Preapproval"].full_name


class PreapprovalServicer(preapproval_pb2_grpc.PreapprovalServicer):
    def __init__(self, channel: PartyChannel, state: StateStore) -> None:
        self.state = state
        self.fanout = PreapprovalCoordinator(channel, _count)

    def Request(
        self, request: preapproval_pb2.PreapprovalRequest, context: grpc.ServicerContext
    ) -> preapproval_pb2.PreapprovalReply:
        try:
            who = identity_of(context, self.state)
            p = request.product
            product = Product(p.kind, float(p.amount), int(p.term_months) or 36)
            req = PreapprovalRequest(bytes(request.pseudonym), product, tuple(request.lenders),
                                     int(request.budget_ms) or DEFAULT_BUDGET_MS)
            result = self.fanout.request(who.name, req)
            self.state.audit(who.name, "preapproval", "request",
                             {"lenders": len(req.lenders), "offers": len(result.offers)})
        except Exception as exc:
            abort(context, exc)
        return preapproval_pb2.PreapprovalReply(request_id=result.request_id, offers=[_msg(o) for o in result.offers])


def _count(_lender: str, outcome: str) -> None:
    telemetry.PREAPPROVAL_OUTCOMES.labels(outcome).inc()


def _msg(o: Offer) -> preapproval_pb2.OfferMsg:
    return preapproval_pb2.OfferMsg(lender=o.lender, product=o.product, amount=o.amount, rate=o.rate,
                                    term_months=o.term_months, valid_s=o.valid_s)
