"""The local scoring API under abuse (FastAPI + uvicorn, party_node/local_http.py): token first, body
limit before reading, read and idle timeouts, bounded scoring threads and connections, loud warning for
non-loopback binds. A stand-in service records what reaches it; every wait is on a socket or an event."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from party_node.local_http import HttpApi, HttpLimits
from party_node.scoring_api import scoring_routes, warn_if_exposed

TOKEN = "limits-test-token-0123456789abcdef"


class Rows:
    def __init__(self, n: int) -> None:
        self.n = n

    def rows(self) -> Iterator[dict[str, Any]]:
        return iter([{"status": "ok"}] * self.n)


class SlowService:
    """Blocks every call until released; counts how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.running = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()

    def score(self, apps: list[Any], **kw: Any) -> Rows:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.entered.release()
        self.release.wait(120)
        with self._lock:
            self.running -= 1
        return Rows(len(apps))


def _raw(port: int, head: str, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.sendall(head.encode() + body)
    return s


def _status(s: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def _post(port: int, body: bytes, token: str | None = TOKEN, length: int | None = None) -> socket.socket:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    n = len(body) if length is None else length
    return _raw(port, f"POST /v1/score HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {n}\r\n\r\n", body)


@pytest.fixture
def api() -> Iterator[tuple[HttpApi, SlowService]]:
    svc = SlowService()
    limits = HttpLimits(max_body=1000, read_timeout_s=0.5, idle_timeout_s=1, workers=2, max_connections=5)
    server = HttpApi(scoring_routes(svc), TOKEN, limits=limits)  # type: ignore[arg-type]
    yield server, svc
    svc.release.set()
    server.stop()


def test_token_is_checked_before_anything(api) -> None:
    server, svc = api
    for token in (None, "wrong-token-wrong-token-wrong"):
        with _post(server.port, b'{"id": "1"}', token) as s:
            assert _status(s) == 401
    assert svc.calls == 0


def test_oversized_body_is_refused_on_its_declared_length_before_reading(api) -> None:
    server, svc = api
    # declares 60 MB and sends none of it: the answer comes without the server waiting for the body
    with _post(server.port, b"", length=60 << 20) as s:
        assert _status(s) == 413
    # a body that lies about its length by streaming more (chunked) is cut at the limit too
    head = (f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 600
    with _raw(server.port, head, b"%x\r\n%s\r\n%x\r\n%s\r\n" % (len(chunk), chunk, len(chunk), chunk)) as s:
        assert _status(s) == 413
    assert svc.calls == 0


def test_slow_body_times_out(api) -> None:
    server, svc = api
    with _post(server.port, b'{"id"', length=50) as s:  # 5 of 50 bytes, then silence
        assert _status(s) == 408
    assert svc.calls == 0


def test_idle_keep_alive_connection_is_closed(api) -> None:
    server, _ = api
    with _raw(server.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") as s:
        assert _status(s) == 200
        while s.recv(4096):  # the rest of the response, then the server's close after the idle timeout
            pass


def test_scoring_threads_and_connections_are_bounded(api) -> None:
    server, svc = api
    body = json.dumps({"id": "13800000000"}).encode()
    busy = [_post(server.port, body) for _ in range(3)]
    assert svc.entered.acquire(timeout=120) and svc.entered.acquire(timeout=120)  # two are in the service
    assert not svc.entered.acquire(timeout=0.5)  # the third waits for a thread (2 workers)
    extra = [_post(server.port, body) for _ in range(4)]  # past 5 connections/tasks: 503 at once
    assert 503 in [_status(s) for s in extra[-2:]]
    svc.release.set()
    assert [_status(s) for s in busy] == [200, 200, 200]
    assert svc.peak == 2
    for s in busy + extra:
        s.close()


def test_non_loopback_bind_warns_loudly(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="party_node.scoring_api"):
        warn_if_exposed("127.0.0.1", "HTTP")
        warn_if_exposed("localhost", "gRPC")
        assert not caplog.records
        warn_if_exposed("0.0.0.0", "HTTP")
    (rec,) = caplog.records
    assert "SECURITY WARNING" in rec.getMessage() and "0.0.0.0" in rec.getMessage() and "TLS" in rec.getMessage()
