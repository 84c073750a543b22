"""The local scoring API as JSON over HTTP, on FastAPI + uvicorn (both maintained; installed with Flower).

``POST /v1/score`` (JSON in, JSON out) and ``GET /healthz``. What holds under abuse, and where:

- **Authentication**: every route but ``/healthz`` needs ``Authorization: Bearer <token>`` (the token
  file in the party home, 0600); anything else is 401 before the body is read.
- **Body size**: a ``Content-Length`` over :attr:`HttpLimits.max_body` is refused with 413 before a byte
  of the body is read; a chunked body is counted as it arrives and cut at the same limit.
- **Read timeout**: each piece of the body must arrive within :attr:`HttpLimits.read_timeout_s` (408).
- **Idle timeout**: a kept-alive connection with no request is closed after ``idle_timeout_s``
  (uvicorn ``timeout_keep_alive``).
- **Bounded work**: uvicorn answers 503 beyond ``max_connections`` concurrent connections and tasks;
  slow connections hold a coroutine, not a thread. Scoring itself runs on at most ``workers`` threads.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request  # a module-level name: FastAPI resolves the handler's annotations here

from fedcore.errors import FedcreditError, InvalidInput
from party_node.scoring import ScoringService

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HTTP_STATUS = {
    "invalid_input": 400,
    "invalid_config": 400,
    "not_found": 404,
    "permission_denied": 403,
    "unauthenticated": 401,
    "unavailable": 503,
    "deadline_exceeded": 504,
}


@dataclass(frozen=True)
class HttpLimits:
    max_body: int = 16 << 20
    read_timeout_s: float = 30.0
    idle_timeout_s: float = 5.0
    workers: int = 8
    max_connections: int = 64


async def _reply(send: Send, status: int, obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class _Guard:
    """ASGI middleware: token, body limit and read timeout, all before the application sees the request."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], token: str, limits: HttpLimits) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"] != "/healthz" and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            await _reply(send, 401, {"error": "unauthenticated", "message": "missing or wrong bearer token"})
            return
        declared = headers.get(b"content-length")
        limit = self.limits.max_body
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                await _reply(send, 400, {"error": "invalid_input", "message": "bad Content-Length"})
                return
            if n > limit:
                await _reply(send, 413, {"error": "invalid_input", "message": f"request body over {limit} bytes"})
                return
        body = bytearray()
        more = scope["method"] in ("POST", "PUT", "PATCH")
        while more:
            try:
                msg = await asyncio.wait_for(receive(), self.limits.read_timeout_s)
            except TimeoutError:
                await _reply(send, 408, {"error": "deadline_exceeded", "message": "request body too slow"})
                return
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if len(body) > limit:
                await _reply(send, 413, {"error": "invalid_input", "message": f"request body over {limit} bytes"})
                return
            more = bool(msg.get("more_body"))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def make_app(service: ScoringService, token: str, limits: HttpLimits = HttpLimits()) -> Any:
    """The ASGI application (FastAPI behind :class:`_Guard`)."""
    import anyio
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from party_node.scoring_api import parse_json_request

    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    pool = anyio.CapacityLimiter(limits.workers)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/v1/score")
    async def score(request: Request) -> JSONResponse:
        try:
            try:
                body = json.loads(await request.body())
            except ValueError:
                raise InvalidInput("request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise InvalidInput("request body must be a JSON object")
            apps, kw = parse_json_request(body)
            batch = await anyio.to_thread.run_sync(lambda: service.score(apps, **kw), limiter=pool)
            return JSONResponse({"scores": list(batch.rows())})
        except FedcreditError as exc:
            return JSONResponse({"error": exc.code, "message": str(exc)}, HTTP_STATUS.get(exc.code, 500))
        except Exception:
            log.exception("local scoring API crashed")
            return JSONResponse({"error": "internal", "message": "internal error (see the node's log)"}, 500)

    return _Guard(api, token, limits)


class HttpApi:
    """uvicorn serving :func:`make_app` on a thread. The socket is bound and listening when this returns."""

    def __init__(
        self, service: ScoringService, token: str, host: str = "127.0.0.1", port: int = 0,
        limits: HttpLimits = HttpLimits(),
    ) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise InvalidInput(f"cannot listen on {host}:{port} for the local HTTP API: {exc}") from None
        self._sock.listen(256)
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            make_app(service, token, limits), log_level="warning", access_log=False, lifespan="off",
            timeout_keep_alive=int(max(1, limits.idle_timeout_s)), limit_concurrency=limits.max_connections,
            h11_max_incomplete_event_size=16 << 10, ws="none", http="h11",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="local-score-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
