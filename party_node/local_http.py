"""Every local JSON API of a party node on one hardened server: FastAPI + uvicorn (both maintained;
installed with Flower). A caller hands :class:`HttpApi` its routes; the server adds ``GET /healthz`` and
:class:`_Guard`. What holds under abuse, and where:

- **Authentication**: every route but ``/healthz`` needs ``Authorization: Bearer <token>`` (a token file
  in the party home, 0600, :func:`fedcore.secret.ensure_token`); anything else is 401 before the body is read.
- **Body size**: a ``Content-Length`` over :attr:`HttpLimits.max_body` is refused with 413 before a byte
  of the body is read; a chunked body is counted as it arrives and cut at the same limit.
- **Read timeout**: each piece of the body must arrive within :attr:`HttpLimits.read_timeout_s` (408).
- **Idle timeout**: a kept-alive connection with no request is closed after ``idle_timeout_s``
  (uvicorn ``timeout_keep_alive``).
- **Bounded work**: uvicorn answers 503 beyond ``max_connections`` concurrent connections and tasks;
  slow connections hold a coroutine, not a thread. Handlers run on at most ``workers`` threads
  (:func:`json_route`).
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

from fastapi import Request  # a module-level name: FastAPI resolves the handlers' annotations here

from fedcore.errors import FedcreditError, InvalidInput
from party_node.scoring_api import _HTTP_STATUS as HTTP_STATUS

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

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



Routes = Callable[[Any, Any], None]
"""Adds the API's routes: called with the FastAPI app and the limiter of its worker threads."""


async def read_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`InvalidInput`."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise InvalidInput("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


async def _json_call(what: str, work: Callable[[], Awaitable[Any]]) -> Any:
    """``await work()`` as a JSON response; typed errors become their HTTP status and code, anything
    else a logged 500 naming ``what``."""
    from fastapi.responses import JSONResponse

    try:
        return JSONResponse(await work())
    except FedcreditError as exc:
        return JSONResponse({"error": exc.code, "message": str(exc)}, HTTP_STATUS.get(exc.code, 500))
    except Exception:
        log.exception("local %s API crashed", what)
        return JSONResponse({"error": "internal", "message": "internal error (see the node's log)"}, 500)


def json_route(method: str, path: str, what: str, handle: Callable[[dict[str, Any]], Any]) -> Routes:
    """One JSON route: ``handle`` gets the body (a JSON object) of a POST or the query parameters of a GET,
    runs on a worker thread (at most ``HttpLimits.workers`` at once) and returns what is sent as JSON."""

    def add(api: Any, pool: Any) -> None:
        import anyio

        async def endpoint(request: Request) -> Any:
            async def work() -> Any:
                arg = await read_object(request) if method == "POST" else dict(request.query_params)
                return await anyio.to_thread.run_sync(lambda: handle(arg), limiter=pool)

            return await _json_call(what, work)

        api.add_api_route(path, endpoint, methods=[method])

    return add


def make_app(routes: Routes, token: str, limits: HttpLimits = HttpLimits()) -> Any:
    """The ASGI application: FastAPI with ``/healthz`` and ``routes``, behind :class:`_Guard`."""
    import anyio
    from fastapi import FastAPI

    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    routes(api, anyio.CapacityLimiter(limits.workers))
    return _Guard(api, token, limits)


class HttpApi:
    """uvicorn serving :func:`make_app` on a thread. The socket is bound and listening when this returns."""

    def __init__(
        self, routes: Routes, token: str, host: str = "127.0.0.1", port: int = 0,
        limits: HttpLimits = HttpLimits(), name: str = "local-http",
    ) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise InvalidInput(f"cannot listen on {host}:{port} for the {name} API: {exc}") from None
        self._sock.listen(256)
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            make_app(routes, token, limits), log_level="warning", access_log=False, lifespan="off",
            timeout_keep_alive=int(max(1, limits.idle_timeout_s)), limit_concurrency=limits.max_connections,
            h11_max_incomplete_event_size=16 << 10, ws="none", http="h11",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
