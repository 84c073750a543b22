"""The local scoring API for the lender's loan system: gRPC LocalScoring and JSON over HTTP, and their start-up."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from fedcredit.v1 import scoring_pb2, scoring_pb2_grpc

from fedcore.errors import FedcreditError, InvalidInput
from fedcore.grpc_options import SERVER_OPTIONS
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.scoring.messages import QUERIES
from fedcore.wire.errors import abort
from party_node.scoring import ScoringService
from party_node.scoring_batch import Applicant

log = logging.getLogger(__name__)


# ---- local API: gRPC ---------------------------------------------------------------------------------


def _applicants(msg: scoring_pb2.LocalScoreRequest) -> list[Applicant]:
    out = []
    for a in msg.applicants:
        feats: dict[str, float | str] = {**dict(a.features), **dict(a.categories)}
        out.append(Applicant(a.id, a.id_kind, feats or None))
    return out


def _score_msg(row: Mapping[str, JSONValue]) -> scoring_pb2.ApplicantScore:
    ok = row["status"] == "ok"
    return scoring_pb2.ApplicantScore(
        id=str(row["id"]),
        status=str(row["status"]),
        prob_default=float(row["prob_default"] or 0.0) if ok else 0.0,
        points=float(row["points"] or 0.0) if ok else 0.0,
        reasons=[
            scoring_pb2.ReasonCodeMsg(feature=r["feature"], logit_impact=r["logit_impact"]) for r in row["reasons"]
        ],  # type: ignore[union-attr]
        decision=str(row["decision"] or ""),
        rate_tier=str(row["rate_tier"] or ""),
        blacklist_hits=int(row["blacklist_hits"]),
        active_loans_elsewhere=int(row["active_loans_elsewhere"]),
        partial=bool(row["partial"]),
        missing_parties=list(row["missing_parties"]),  # type: ignore[arg-type]
        model_id=str(row["model_id"]),
        model_version=str(row["model_version"]),
        request_id=str(row["request_id"]),
        own_data=bool(row["own_data"]),
        external_logit=float(row["external_logit"] or 0.0) if ok else 0.0,
    )


class LocalScoringServicer(scoring_pb2_grpc.LocalScoringServicer):
    def __init__(self, service: ScoringService) -> None:
        self.service = service

    def _kw(self, request: scoring_pb2.LocalScoreRequest) -> dict[str, Any]:
        return {
            "model_id": request.model_id or None,
            "model_version": request.model_version or None,
            "queries": tuple(request.queries) or QUERIES,
            "allow_partial": request.allow_partial or None,
        }

    def Score(
        self, request: scoring_pb2.LocalScoreRequest, context: grpc.ServicerContext
    ) -> scoring_pb2.LocalScoreResponse:
        try:
            batch = self.service.score(_applicants(request), **self._kw(request))
            return scoring_pb2.LocalScoreResponse(scores=[_score_msg(r) for r in batch.rows()])
        except Exception as exc:
            abort(context, exc)
            raise  # pragma: no cover

    def ScoreBatch(
        self, request: scoring_pb2.LocalScoreRequest, context: grpc.ServicerContext
    ) -> Iterator[scoring_pb2.LocalScoreProgress]:
        apps = _applicants(request)
        try:
            done = 0
            for batch in self.service.score_stream(apps, total=len(apps), **self._kw(request)):
                done += len(batch)
                yield scoring_pb2.LocalScoreProgress(
                    done=done, total=len(apps), scores=[_score_msg(r) for r in batch.rows()]
                )
        except Exception as exc:
            abort(context, exc)


def serve_local_grpc(
    service: ScoringService, address: str = "127.0.0.1:0", workers: int = 16
) -> tuple[grpc.Server, int]:
    """Start the local gRPC API (plaintext on loopback; put TLS in front for anything wider)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="local-score"), options=SERVER_OPTIONS
    )
    scoring_pb2_grpc.add_LocalScoringServicer_to_server(LocalScoringServicer(service), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise InvalidInput(f"cannot listen on {address} for the local scoring API")
    server.start()
    return server, port


# ---- local API: JSON over HTTP ----------------------------------------------------------------------

_HTTP_STATUS = {
    "invalid_input": 400,
    "invalid_config": 400,
    "not_found": 404,
    "permission_denied": 403,
    "unauthenticated": 401,
    "unavailable": 503,
    "deadline_exceeded": 504,
}
MAX_HTTP_BODY = 64 << 20


def parse_json_request(body: Mapping[str, Any]) -> tuple[list[Applicant], dict[str, Any]]:
    """``{"applicants": [{"id": ..., "id_kind": ..., "features": {...}}], "model_id"?, "queries"?, ...}``."""
    apps_in = body.get("applicants")
    if apps_in is None and "id" in body:
        apps_in = [body]
    if not isinstance(apps_in, list) or not apps_in:
        raise InvalidInput("body needs a non-empty 'applicants' list (or a single 'id')")
    apps: list[Applicant] = []
    for i, a in enumerate(apps_in):
        if not isinstance(a, dict) or not isinstance(a.get("id"), str):
            raise InvalidInput(f"applicants[{i}] needs a string 'id'")
        feats = a.get("features")
        if feats is not None and (
            not isinstance(feats, dict)
            or not all(isinstance(v, int | float | str) and not isinstance(v, bool) for v in feats.values())
        ):
            raise InvalidInput(f"applicants[{i}].features must map names to numbers or category levels (strings)")
        apps.append(Applicant(a["id"], str(a.get("id_kind") or ""), feats))
    kw: dict[str, Any] = {}
    for k in ("model_id", "model_version"):
        if body.get(k):
            kw[k] = str(body[k])
    if body.get("queries"):
        kw["queries"] = tuple(body["queries"])
    if "allow_partial" in body:
        kw["allow_partial"] = bool(body["allow_partial"])
    return apps, kw


def make_http_server(service: ScoringService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """``POST /v1/score`` (JSON in, JSON out), ``GET /healthz``. Call ``serve_forever()`` on a thread."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("local http: " + fmt, *args)

        def _send(self, code: int, obj: Mapping[str, Any]) -> None:
            data = json.dumps(obj).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": "not_found", "message": f"no route {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/v1/score":
                self._send(404, {"error": "not_found", "message": f"no route {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_HTTP_BODY:
                    raise InvalidInput(f"request body must be 1..{MAX_HTTP_BODY} bytes")
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    raise InvalidInput("request body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise InvalidInput("request body must be a JSON object")
                apps, kw = parse_json_request(body)
                batch = service.score(apps, **kw)
                self._send(200, {"scores": list(batch.rows())})
            except FedcreditError as exc:
                self._send(_HTTP_STATUS.get(exc.code, 500), {"error": exc.code, "message": str(exc)})
            except Exception:
                log.exception("local scoring API crashed")
                self._send(500, {"error": "internal", "message": "internal error (see the node's log)"})

    return ThreadingHTTPServer((host, port), Handler)



def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise InvalidInput(f"listen address {listen!r} must be host:port") from None


@dataclass
class LocalApi:
    """The running local scoring API (gRPC and/or HTTP); :meth:`stop` shuts both down."""

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


def start_local_api(service: ScoringService) -> LocalApi:
    """Start the local API on ``settings.grpc_listen`` / ``settings.http_listen`` (loopback by default)."""
    api = LocalApi()
    st = service.settings
    if st.grpc_listen:
        api.grpc_server, api.grpc_port = serve_local_grpc(service, st.grpc_listen)
    if st.http_listen:
        host, port = _split(st.http_listen)
        api.http_server = make_http_server(service, host, port)
        api.http_port = api.http_server.server_address[1]
        threading.Thread(target=api.http_server.serve_forever, name="local-score-http", daemon=True).start()
    log.info("local scoring API: grpc port %s, http port %s", api.grpc_port or "-", api.http_port or "-")
    return api
