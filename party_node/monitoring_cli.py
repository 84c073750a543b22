"""``fedcredit party monitor register|run|alerts`` and the alerts API of a running node
(``GET /v1/alerts[?kind=...&limit=...]``) with its scheduled passes. See :mod:`party_node.monitoring`."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlparse

import typer

from fedcore.errors import FedcreditError, InvalidInput

if TYPE_CHECKING:
    from .monitoring import Monitor

log = logging.getLogger(__name__)
app = typer.Typer(help="Post-loan monitoring of the lender's active book (alerts stay here).",
                  no_args_is_help=True)
Home = Annotated[
    Path, typer.Option("--home", help="The party's home folder (env FEDCREDIT_HOME).", envvar="FEDCREDIT_HOME")
]


def _monitor(home: Path) -> tuple[Monitor, Any]:
    from .config import load_party_config
    from .data_cli import open_store
    from .monitoring import Monitor, MonitorSettings
    from .scoring import build_service

    config = load_party_config(home)
    store = open_store(config.home, None)
    return Monitor(build_service(config, store), MonitorSettings.load(config.home)), store


def _run(home: Path, what: str, **kw: Any) -> None:
    try:
        mon, store = _monitor(home)
        try:
            if what == "register":
                typer.echo(f"book: {mon.register_book()} active borrowers with monitoring consent")
            elif what == "run":
                r = mon.run()
                kinds: dict[str, int] = {}
                for a in r.alerts:
                    kinds[a.kind] = kinds.get(a.kind, 0) + 1
                typer.echo(json.dumps({"book": r.book, "alerts": len(r.alerts), "by_kind": kinds,
                                       "psi": r.psi, "webhook_delivered": r.delivered}))
            else:
                for row in mon.alerts(kind=kw.get("kind") or None, limit=kw.get("limit", 100)):
                    typer.echo(json.dumps(row))
        finally:
            store.close()
    except FedcreditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("register")
def register(home: Home = Path(".")) -> None:
    """Register the book: this lender's active borrowers who consented to monitoring."""
    _run(home, "register")


@app.command("run")
def run(home: Home = Path(".")) -> None:
    """One monitoring pass: re-score the book jointly, raise and deliver alerts."""
    _run(home, "run")


@app.command("alerts")
def alerts(
    home: Home = Path("."),
    kind: Annotated[str, typer.Option(help="Only alerts of this kind.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
) -> None:
    """List stored alerts (JSON lines, newest first)."""
    _run(home, "alerts", kind=kind, limit=limit)


def make_alerts_server(monitor: Monitor, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("alerts http: " + fmt, *args)

        def _send(self, code: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path != "/v1/alerts":
                self._send(404, {"error": "not_found"})
                return
            q = parse_qs(url.query)
            try:
                limit = int(q.get("limit", ["100"])[0])
                if not 1 <= limit <= 10_000:
                    raise ValueError
            except ValueError:
                self._send(400, {"error": "invalid_input", "message": "limit must be an integer in 1..10000"})
                return
            try:
                self._send(200, {"alerts": monitor.alerts(kind=q.get("kind", [None])[0], limit=limit)})
            except InvalidInput as exc:
                self._send(400, {"error": exc.code, "message": str(exc)})

    return ThreadingHTTPServer((host, port), Handler)


class MonitoringRunner:
    """On a running node: the alerts API and the scheduled passes (``interval_s``)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self._stop = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        st = monitor.settings
        if st.http_listen:
            host, _, port = st.http_listen.rpartition(":")
            self.server = make_alerts_server(monitor, host or "127.0.0.1", int(port))
            threading.Thread(target=self.server.serve_forever, name="alerts-http", daemon=True).start()
        if st.interval_s > 0:
            threading.Thread(target=self._loop, name="monitor-passes", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.monitor.settings.interval_s):
            try:
                self.monitor.run()
            except FedcreditError as exc:
                log.warning("monitoring pass failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
