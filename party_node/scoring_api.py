"""The local scoring API for the lender's loan system: gRPC LocalScoring and JSON over HTTP
on the hardened server of :mod:`party_node.local_http`, and their start-up.

Both take raw personal ids, so both need the bearer token of ``HOME/scoring_api.token`` (0600, made at
first start): HTTP as ``Authorization: Bearer <token>``, gRPC as metadata ``authorization: Bearer <token>``.
Neither speaks TLS: a bind other than loopback is logged as a loud warning (put a TLS proxy in front).
The gRPC server offers reflection (v1 and v1alpha) so that clients in other languages can discover it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from fedcredit.v1 import scoring_pb2, scoring_pb2_grpc

from fedcore.errors import InvalidInput
from fedcore.grpc_options import SERVER_OPTIONS
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.scoring.messages import QUERIES
from fedcore.wire.errors import abort
from fedcore.wire.reflection import enable_reflection
from party_node.scoring import ScoringService
from party_node.scoring_batch import Applicant

if TYPE_CHECKING:  # FastAPI and uvicorn load only when the HTTP API starts
    from party_node.local_http import HttpApi, HttpLimits, Routes

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


_HTTP_STATUS = {  # error code -> HTTP status, for every local JSON API of a party
    "invalid_input": 400,
    "invalid_config": 400,
    "not_found": 404,
    "permission_denied": 403,
    "unauthenticated": 401,
    "unavailable": 503,
    "deadline_exceeded": 504,
}
TOKEN_FILE = "scoring_api.token"  # noqa: S105 (a file name)


class TokenCheck(grpc.ServerInterceptor):
    """Every call of a local gRPC API needs ``authorization: Bearer <token>``; reflection does not."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if "ServerReflection" in details.method:
            return continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(given).encode(), self._expected):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None
        return self._deny_stream if handler.response_streaming else self._deny_unary


def token_grpc_server(token: str, workers: int, name: str) -> grpc.Server:
    """A gRPC server for a local API: bearer token checked, ``workers`` threads, bounded queue."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name), options=SERVER_OPTIONS,
        interceptors=[TokenCheck(token)], maximum_concurrent_rpcs=workers * 4,
    )


def warn_if_exposed(host: str, what: str) -> None:
    """A loud warning for a bind that is not loopback: the local APIs have no TLS (``what``: which one)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        log.warning(
            "SECURITY WARNING: the local %s API listens on %s WITHOUT TLS: raw personal ids and the "
            "bearer token cross the network in clear. Bind it to 127.0.0.1 and put a TLS proxy in front.",
            what, host,
        )


def serve_local_grpc(
    service: ScoringService, address: str = "127.0.0.1:0", workers: int = 16, *, token: str
) -> tuple[grpc.Server, int]:
    """Start the local gRPC API (token-checked, reflection on; no TLS: loopback, or a proxy in front)."""
    warn_if_exposed(_split(address)[0], "scoring gRPC")
    server = token_grpc_server(token, workers, "local-score")
    scoring_pb2_grpc.add_LocalScoringServicer_to_server(LocalScoringServicer(service), server)
    enable_reflection((scoring_pb2.DESCRIPTOR.services_by_name["LocalScoring"].full_name,), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise InvalidInput(f"cannot listen on {address} for the local scoring API")
    server.start()
    return server, port


# ---- local API: JSON over HTTP ----------------------------------------------------------------------

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


def scoring_routes(service: ScoringService) -> Routes:
    """``POST /v1/score`` (JSON in, JSON out) for :class:`party_node.local_http.HttpApi`."""
    from party_node.local_http import json_route

    def score(body: dict[str, Any]) -> dict[str, Any]:
        apps, kw = parse_json_request(body)
        return {"scores": list(service.score(apps, **kw).rows())}

    return json_route("POST", "/v1/score", "scoring", score)


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
    http_server: HttpApi | None = None
    http_port: int = 0

    def stop(self) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop(1.0)
        if self.http_server is not None:
            self.http_server.stop()


def start_local_api(service: ScoringService, token: str, limits: HttpLimits | None = None) -> LocalApi:
    """Start the local API on ``settings.grpc_listen`` / ``settings.http_listen`` (loopback by default)."""
    from party_node.local_http import HttpApi, HttpLimits

    api = LocalApi()
    st = service.settings
    if st.grpc_listen:
        api.grpc_server, api.grpc_port = serve_local_grpc(service, st.grpc_listen, token=token)
    if st.http_listen:
        host, port = _split(st.http_listen)
        warn_if_exposed(host, "scoring HTTP")
        api.http_server = HttpApi(scoring_routes(service), token, host, port, limits or HttpLimits(),
                                  name="local-score-http")
        api.http_port = api.http_server.port
    log.info("local scoring API: grpc port %s, http port %s", api.grpc_port or "-", api.http_port or "-")
    return api
