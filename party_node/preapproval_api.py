"""The platform's local pre-approval API for its own application: gRPC ``LocalPreapproval/Preapprove``
and JSON ``POST /v1/preapprove`` (loopback by default; it takes raw viewer ids).

Both need the bearer token of ``HOME/preapproval_api.token`` (0600, made at first start) and run on the
same hardened servers as the local scoring API (:mod:`party_node.local_http`: body limit read before the
body, timeouts, bounded threads; gRPC: :class:`party_node.scoring_api.TokenCheck`).

JSON body: ``{"viewer_id": "...", "id_kind"?: "phone", "product": {"kind": "car_loan", "amount": 120000,
"term_months"?: 36}, "lenders": ["yixin", "meili"], "budget_ms"?: 1500}``; reply ``{"request_id": ...,
"offers": [{"lender", "product", "amount", "rate", "term_months", "valid_s"}]}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
from fedcredit.v1 import preapproval_pb2, preapproval_pb2_grpc

from fedcore.errors import InvalidInput
from fedcore.protocol.preapproval.messages import Product
from fedcore.wire.errors import abort
from party_node.preapproval import PreapprovalService, product_from_msg, result_to_msg
from party_node.scoring_api import LocalApi, _split, token_grpc_server, warn_if_exposed

if TYPE_CHECKING:  # FastAPI and uvicorn load only when the HTTP API starts
    from party_node.local_http import Routes

log = logging.getLogger(__name__)
MAX_BODY = 64 << 10
TOKEN_FILE = "preapproval_api.token"  # noqa: S105 (a file name)


class LocalPreapprovalServicer(preapproval_pb2_grpc.LocalPreapprovalServicer):
    def __init__(self, service: PreapprovalService) -> None:
        self.service = service

    def Preapprove(
        self, request: preapproval_pb2.LocalPreapprovalRequest, context: grpc.ServicerContext
    ) -> preapproval_pb2.PreapprovalReply:
        try:
            result = self.service.preapprove(request.viewer_id, product_from_msg(request.product),
                                             list(request.lenders), request.id_kind, int(request.budget_ms))
        except Exception as exc:
            abort(context, exc)
        return result_to_msg(result)


def parse_body(body: Mapping[str, Any]) -> dict[str, Any]:
    viewer = body.get("viewer_id")
    if not isinstance(viewer, str) or not viewer:
        raise InvalidInput("viewer_id must be a non-empty string")
    lenders = body.get("lenders")
    if not isinstance(lenders, list) or not all(isinstance(x, str) for x in lenders):
        raise InvalidInput("lenders must be a list of lender names")
    budget = body.get("budget_ms", 0)
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise InvalidInput("budget_ms must be an integer")
    return {"viewer_id": viewer, "product": Product.from_dict(body.get("product") or {}), "lenders": lenders,
            "id_kind": str(body.get("id_kind") or ""), "budget_ms": budget}


def preapproval_routes(service: PreapprovalService) -> Routes:
    """``POST /v1/preapprove`` for :class:`party_node.local_http.HttpApi`."""
    from party_node.local_http import json_route

    return json_route("POST", "/v1/preapprove", "pre-approval",
                      lambda body: service.preapprove(**parse_body(body)).to_dict())


def start_preapproval_api(service: PreapprovalService, token: str) -> LocalApi:
    """Start on ``settings.grpc_listen`` / ``settings.http_listen``, both checking ``token``."""
    from party_node.local_http import HttpApi, HttpLimits

    api = LocalApi()
    st = service.settings
    if st.grpc_listen:
        warn_if_exposed(_split(st.grpc_listen)[0], "pre-approval gRPC")
        server = token_grpc_server(token, 8, "local-preapproval")
        preapproval_pb2_grpc.add_LocalPreapprovalServicer_to_server(LocalPreapprovalServicer(service), server)
        api.grpc_port = server.add_insecure_port(st.grpc_listen)
        if api.grpc_port == 0:
            raise InvalidInput(f"cannot listen on {st.grpc_listen} for the local pre-approval API")
        server.start()
        api.grpc_server = server
    if st.http_listen:
        host, port = _split(st.http_listen)
        warn_if_exposed(host, "pre-approval HTTP")
        api.http_server = HttpApi(preapproval_routes(service), token, host, port, HttpLimits(max_body=MAX_BODY),
                                  name="preapproval-http")
        api.http_port = api.http_server.port
    log.info("local pre-approval API: grpc port %s, http port %s", api.grpc_port or "-", api.http_port or "-")
    return api
