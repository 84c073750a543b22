"""The platform's pre-approval API and the lender's alerts API on the hardened local server
(party_node/local_http.py): a missing or wrong bearer token is refused (HTTP 401, gRPC UNAUTHENTICATED)
before the service is called, an over-long declared body is refused with 413 before it is read, and
with the token both answer. Stand-in services record what reaches them; every wait is on a socket."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from fedcredit.v1 import preapproval_pb2, preapproval_pb2_grpc

from fedcore.protocol.preapproval.messages import Offer, PreapprovalResult
from party_node.monitoring_cli import make_alerts_server
from party_node.preapproval_api import MAX_BODY, start_preapproval_api
from party_node.scoring_api import LocalApi
from tests.unit.party_node.test_local_api_limits import _raw
from tests.unit.party_node.test_local_api_limits import _status as _read_status

TOKEN = "api-token-test-0123456789abcdef"
OFFER = Offer("yixin", "car_loan", 100000.0, 0.05, 36, 600)


@dataclass
class Settings:
    grpc_listen: str = "127.0.0.1:0"
    http_listen: str = "127.0.0.1:0"


class Platform:
    settings = Settings()

    def __init__(self) -> None:
        self.calls: list[str] = []

    def preapprove(self, viewer_id: str, product: Any, lenders: list[str], id_kind: str = "",
                   budget_ms: int = 0) -> PreapprovalResult:
        self.calls.append(viewer_id)
        return PreapprovalResult("req-1", (OFFER,))


class Book:
    def __init__(self) -> None:
        self.calls = 0

    def alerts(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        self.calls += 1
        return [{"kind": kind or "pd_up", "row_id": 7}][:limit]


def _status(port: int, head: str) -> int:
    with _raw(port, head) as s:
        return _read_status(s)


def _call(url: str, token: str | None, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=120) as r:  # noqa: S310
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def platform() -> Iterator[tuple[LocalApi, Platform]]:
    svc = Platform()
    api = start_preapproval_api(svc, TOKEN)  # type: ignore[arg-type]
    yield api, svc
    api.stop()


def test_preapproval_http_needs_the_token_and_limits_the_body(platform: tuple[LocalApi, Platform]) -> None:
    api, svc = platform
    url = f"http://127.0.0.1:{api.http_port}/v1/preapprove"
    body = {"viewer_id": "13800000000", "product": {"kind": "car_loan", "amount": 100000}, "lenders": ["yixin"]}
    for token in (None, "wrong-token-wrong-token-wrong"):
        code, reply = _call(url, token, body)
        assert code == 401 and reply["error"] == "unauthenticated"
    # declares 1 MB and sends none of it: refused at once, without waiting for the body
    head = (f"POST /v1/preapprove HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {MAX_BODY + 1}\r\n\r\n")
    assert _status(api.http_port, head) == 413
    assert svc.calls == []
    assert _call(url, TOKEN, body) == (200, {"request_id": "req-1", "offers": [OFFER.to_dict()]})
    code, reply = _call(url, TOKEN, {**body, "budget_ms": "soon"})
    assert code == 400 and "budget_ms" in reply["message"]
    assert svc.calls == ["13800000000"]


def test_preapproval_grpc_needs_the_token(platform: tuple[LocalApi, Platform]) -> None:
    api, svc = platform
    req = preapproval_pb2.LocalPreapprovalRequest(
        viewer_id="13800000000", product=preapproval_pb2.ProductMsg(kind="car_loan", amount=100000),
        lenders=["yixin"])
    with grpc.insecure_channel(f"127.0.0.1:{api.grpc_port}") as ch:
        stub = preapproval_pb2_grpc.LocalPreapprovalStub(ch)
        for meta in ((), (("authorization", "Bearer wrong-token-wrong-token"),)):
            with pytest.raises(grpc.RpcError) as err:
                stub.Preapprove(req, timeout=120, metadata=meta)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert svc.calls == []
        reply = stub.Preapprove(req, timeout=120, metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert reply.request_id == "req-1" and [o.lender for o in reply.offers] == ["yixin"]


def test_alerts_api_needs_the_token_and_limits_the_body() -> None:
    book = Book()
    server = make_alerts_server(book, TOKEN)  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{server.port}/v1/alerts"
    try:
        for token in (None, "wrong-token-wrong-token-wrong"):
            assert _call(url, token)[0] == 401
        head = f"GET /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 60000\r\n\r\n"
        assert _status(server.port, head) == 413
        assert book.calls == 0
        assert _call(url + "?kind=pd_above&limit=1", TOKEN) == (200, {"alerts": [{"kind": "pd_above", "row_id": 7}]})
        code, reply = _call(url + "?limit=many", TOKEN)
        assert code == 400 and "limit" in reply["message"]
    finally:
        server.stop()
