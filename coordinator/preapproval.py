"""The coordinator's ``Preapproval`` RPCs: ``Request`` (the platform's node asks the named lenders for
offers, sealed to the platform) and ``AnnounceSnapshot`` (the platform tells the lenders a new behaviour
snapshot is loaded), both through
:class:`~fedcore.protocol.preapproval.coordinator.PreapprovalCoordinator` on the party links.
What the coordinator learns is documented in :mod:`fedcore.protocol.preapproval`."""

from __future__ import annotations

import json

import grpc
from fedcredit.v1 import preapproval_pb2, preapproval_pb2_grpc

from fedcore import telemetry
from fedcore.errors import InvalidInput
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.preapproval.coordinator import PreapprovalCoordinator, StandingScores
from fedcore.protocol.preapproval.messages import DEFAULT_BUDGET_MS, Offer, PreapprovalRequest, Product
from fedcore.protocol.scoring.groups import ScoreGroups
from fedcore.wire.errors import abort

from .auth import identity_of
from .state import StateStore

SERVICE = preapproval_pb2.DESCRIPTOR.services_by_name["Preapproval"].full_name


class PreapprovalServicer(preapproval_pb2_grpc.PreapprovalServicer):
    def __init__(self, channel: PartyChannel, state: StateStore, *, groups: ScoreGroups | None = None,
                 scores: StandingScores | None = None) -> None:
        self.state = state
        self.fanout = PreapprovalCoordinator(channel, _count, groups, scores)

    def Request(
        self, request: preapproval_pb2.PreapprovalRequest, context: grpc.ServicerContext
    ) -> preapproval_pb2.PreapprovalReply:
        try:
            who = identity_of(context, self.state)
            p = request.product
            product = Product(p.kind, float(p.amount), int(p.term_months) or 36)
            ann = None
            if request.announcement:
                try:
                    ann = json.loads(request.announcement)
                except ValueError:
                    raise InvalidInput("announcement is not JSON") from None
                if not isinstance(ann, dict) or len(request.announcement) > 8192:
                    raise InvalidInput("announcement must be a JSON object of at most 8 KiB")
            req = PreapprovalRequest(bytes(request.pseudonym), product, tuple(request.lenders),
                                     int(request.budget_ms) or DEFAULT_BUDGET_MS, ann)
            result = self.fanout.request(who.name, req)
            self.state.audit(who.name, "preapproval", "request",
                             {"lenders": len(req.lenders), "offers": len(result.offers) + len(result.sealed)})
        except Exception as exc:
            abort(context, exc)
        return preapproval_pb2.PreapprovalReply(
            request_id=result.request_id, offers=[_msg(o) for o in result.offers],
            sealed=[preapproval_pb2.SealedOfferMsg(lender=s.lender, sealed=json.dumps(s.sealed))
                    for s in result.sealed])

    def AnnounceSnapshot(
        self, request: preapproval_pb2.SnapshotAnnouncement, context: grpc.ServicerContext
    ) -> preapproval_pb2.SnapshotAnnounced:
        try:
            who = identity_of(context, self.state)
            n = self.fanout.announce_snapshot(who.name, request.as_of)
            self.state.audit(who.name, "preapproval", "snapshot", {"as_of": request.as_of, "lenders": n})
        except Exception as exc:
            abort(context, exc)
        return preapproval_pb2.SnapshotAnnounced(lenders=n)


def _count(_lender: str, outcome: str) -> None:
    telemetry.PREAPPROVAL_OUTCOMES.labels(outcome).inc()


def _msg(o: Offer) -> preapproval_pb2.OfferMsg:
    return preapproval_pb2.OfferMsg(lender=o.lender, product=o.product, amount=o.amount, rate=o.rate,
                                    term_months=o.term_months, valid_s=o.valid_s)
