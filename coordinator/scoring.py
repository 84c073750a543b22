"""The coordinator's ``Scoring/Score`` RPC: a lender's node asks for the consortium's encrypted partial
scores; the coordinator fans out over the party links (:class:`~fedcore.protocol.scoring.ScoringCoordinator`
on the :class:`~coordinator.link.LinkHub`), sums ciphertexts and streams the sum back.

Thin servicer: authenticate the caller by its mTLS certificate (:func:`coordinator.auth.identity_of`;
the interceptor has already applied ``RPC_ROLES``), convert proto <-> domain, map errors in one place
(:func:`fedcore.wire.errors.status_of`). What the coordinator learns is documented in
:mod:`fedcore.protocol.scoring`: the requester, n, the pseudonyms and ciphertexts it cannot decrypt.

Wiring (lead): ``scoring_pb2_grpc.add_ScoringServicer_to_server(ScoringServicer(hub, state), server)``,
``"/fedcredit.v1.Scoring/Score": frozenset({Role.LENDER})`` in ``RPC_ROLES``, and the service name in
``SERVICES`` for reflection/health.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
from fedcredit.v1 import scoring_pb2, scoring_pb2_grpc

from fedcore.errors import FedcreditError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.groups import ScoreGroups
from fedcore.protocol.scoring.messages import DEFAULT_MAX_BATCH
from fedcore.wire.errors import abort
from fedcore.wire.scoring import request_from_proto, response_chunks

from .auth import identity_of
from .state import StateStore

log = logging.getLogger(__name__)

SERVICE = scoring_pb2.DESCRIPTOR.services_by_name["Scoring"].full_name


class ScoringServicer(scoring_pb2_grpc.ScoringServicer):
    def __init__(self, channel: PartyChannel, state: StateStore, *, max_batch: int = DEFAULT_MAX_BATCH,
                 groups: ScoreGroups | None = None) -> None:
        self.state = state
        self.fanout = ScoringCoordinator(channel, max_batch=max_batch, groups=groups)

    def Score(
        self, request: scoring_pb2.JointScoreRequest, context: grpc.ServicerContext
    ) -> Iterator[scoring_pb2.JointScoreChunk]:
        try:
            who = identity_of(context, self.state)
            req = request_from_proto(request)
            resp = self.fanout.score(who.name, req)
            # Volume only (for the dashboard): who asked and how many applicants, never which.
            self.state.audit(who.name, "score", "joint", {"applicants": req.n})
        except FedcreditError as exc:
            abort(context, exc)
        except Exception as exc:
            abort(context, exc)
        yield from response_chunks(resp)
