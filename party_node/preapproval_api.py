"""The platform's local pre-approval API for its own application: gRPC ``LocalPreapproval/Preapprove``
and JSON ``POST /v1/preapprove`` (loopback by default; it takes raw viewer ids).

JSON body: ``{"viewer_id": "...", "id_kind"?: "phone", "product": {"kind": "car_loan", "amount": 120000,
"term_months"?: 36}, "lenders": ["yixin", "meili"], "budget_ms"?: 1500}``; reply ``{"request_id": ...,
"offers": [{"lender", "product", "amount", "rate", "term_months", "valid_s"}]}``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from fedcredit.v1 import preapproval_pb2, preapproval_pb2_grpc

from fedcore.errors import FedcreditError, InvalidInput
from fedcore.grpc_options import SERVER_OPTIONS
from fedcore.protocol.preapproval.messages import Product
from fedcore.wire.errors import abort
from party_node.preapproval import PreapprovalService, product_from_msg, result_to_msg
from party_node.scoring_api import _split
from party_node.scoring_http import HTTP_STATUS as _HTTP_STATUS

log = logging.getLogger(__name__)
MAX_BODY = 64 << 10


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


def make_http_server(service: PreapprovalService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("preapproval http: " + fmt, *args)

        def _send(self, code: int, obj: Mapping[str, Any]) -> None:
            data = json.dumps(obj).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            code, body = (200, {"status": "ok"}) if self.path == "/healthz" else (404, {"error": "not_found"})
            self._send(code, body)

        def do_POST(self) -> None:
            if self.path != "/v1/preapprove":
                self._send(404, {"error": "not_found", "message": f"no route {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_BODY:
                    raise InvalidInput(f"request body must be 1..{MAX_BODY} bytes")
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    raise InvalidInput("request body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise InvalidInput("request body must be a JSON object")
                self._send(200, service.preapprove(**parse_body(body)).to_dict())
            except FedcreditError as exc:
                self._send(_HTTP_STATUS.get(exc.code, 500), {"error": exc.code, "message": str(exc)})
            except Exception:
                log.exception("local pre-approval API crashed")
                self._send(500, {"error": "internal", "message": "internal error (see the node's log)"})

    return ThreadingHTTPServer((host, port), Handler)


@dataclass
class PreapprovalApi:
    """The running local pre-approval API (gRPC and/or HTTP); :meth:`stop` shuts both down."""

    grpc_server: grpc.Server | None = None
    grpc_port: int = 0
    http_server: ThreadingHTTPServer | None = None
    http_port: int = 0

    def stop(self) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop(1.0)
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()


def start_preapproval_api(service: PreapprovalService) -> PreapprovalApi:
    """Start on ``settings.grpc_listen`` / ``settings.http_listen``."""
    api = PreapprovalApi()
    st = service.settings
    if st.grpc_listen:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="local-preapproval"),
                             options=SERVER_OPTIONS)
        preapproval_pb2_grpc.add_LocalPreapprovalServicer_to_server(LocalPreapprovalServicer(service), server)
        api.grpc_port = server.add_insecure_port(st.grpc_listen)
        if api.grpc_port == 0:
            raise InvalidInput(f"cannot listen on {st.grpc_listen} for the local pre-approval API")
        server.start()
        api.grpc_server = server
    if st.http_listen:
        host, port = _split(st.http_listen)
        api.http_server = make_http_server(service, host, port)
        api.http_port = api.http_server.server_address[1]
        threading.Thread(target=api.http_server.serve_forever, name="preapproval-http", daemon=True).start()
    log.info("local pre-approval API: grpc port %s, http port %s", api.grpc_port or "-", api.http_port or "-")
    return api
