"""``fedcredit party monitor register|run|alerts`` and the alerts API of a running node
(``GET /v1/alerts[?kind=...&limit=...]``) with its scheduled passes. See :mod:`party_node.monitoring`.

The alerts API names borrowers, so it needs the bearer token of ``HOME/monitoring_api.token`` (0600, made
at first start) and runs on the hardened local server of :mod:`party_node.local_http`."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedcore.errors import FedcreditError, InvalidInput

if TYPE_CHECKING:
    from .local_http import HttpApi
    from .monitoring import Monitor

log = logging.getLogger(__name__)
TOKEN_FILE = "monitoring_api.token"  # noqa: S105 (a file name)
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
                                       "psi": r.psi, "pd_threshold": r.pd_threshold,
                                       "webhook_delivered": r.delivered}))
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


def make_alerts_server(monitor: Monitor, token: str, host: str = "127.0.0.1", port: int = 0) -> HttpApi:
    """``GET /v1/alerts[?kind=...&limit=...]`` on :class:`party_node.local_http.HttpApi` (token-checked)."""
    from .local_http import HttpApi, HttpLimits, json_route
    from .scoring_api import warn_if_exposed

    def alerts(q: dict[str, Any]) -> dict[str, Any]:
        try:
            limit = int(q.get("limit", "100"))
            if not 1 <= limit <= 10_000:
                raise ValueError
        except ValueError:
            raise InvalidInput("limit must be an integer in 1..10000") from None
        return {"alerts": monitor.alerts(kind=q.get("kind"), limit=limit)}

    warn_if_exposed(host, "monitoring alerts HTTP")
    return HttpApi(json_route("GET", "/v1/alerts", "monitoring alerts", alerts), token, host, port,
                   HttpLimits(max_body=4 << 10), name="alerts-http")


class MonitoringRunner:
    """On a running node: the alerts API and the scheduled passes (``interval_s``)."""

    def __init__(self, monitor: Monitor, token: str) -> None:
        from .scoring_api import _split

        self.monitor = monitor
        self._stop = threading.Event()
        self.server: HttpApi | None = None
        st = monitor.settings
        if st.http_listen:
            self.server = make_alerts_server(monitor, token, *_split(st.http_listen))
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
            self.server.stop()


class SnapshotPasses:
    """Monitoring passes started by the platform's snapshot announcements (``monitoring.snapshot``): one
    at a time, in a background thread; announcements arriving during a pass give one more pass after it.
    ``make_monitor()`` builds the lender's :class:`Monitor` (``None``: this lender does not monitor)."""

    def __init__(self, make_monitor: Callable[[], Monitor | None]) -> None:
        self._make = make_monitor
        self._lock = threading.Lock()
        self._pending: str | None = None
        self._running = False

    def fire(self, as_of: str) -> None:
        with self._lock:
            self._pending = as_of
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._drain, name="monitor-snapshot", daemon=True).start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                as_of, self._pending = self._pending, None
                if as_of is None:
                    self._running = False
                    return
            try:
                mon = self._make()
                if mon is not None:
                    mon.run(trigger=f"snapshot {as_of}")
            except Exception as exc:  # a failed pass must not stop the passes after later snapshots
                log.warning("monitoring pass after snapshot %s failed: %s", as_of, exc)
