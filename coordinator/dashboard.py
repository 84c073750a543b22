"""The coordinator's read-only web dashboard, and its Prometheus ``/metrics``, on a port of their own.

``[dashboard] listen = "127.0.0.1:7480"`` turns it on (off by default). Everything is behind the admin's
dashboard token: a random secret written at first start to ``COORD_HOME/admin/dashboard.token`` (0600),
given either in the login form (which sets an HttpOnly cookie holding a random session id that expires
after ``session_ttl_s``; repeated wrong tokens lock the address out for a while), as
``Authorization: Bearer TOKEN`` or as HTTP Basic with any user name and the token as password (what a
Prometheus scrape config uses).

Pages (server-rendered HTML with inline SVG, no JavaScript or CDN; the page refreshes itself):
parties and their liveness, runs with per-round validation AUC and KS curves, models and versions,
scoring volume per day (counts only), plus ``/api/overview`` (the same as JSON) and ``/metrics``.

Scoring volume: scoring has no request log at the coordinator yet, so the counts come from the run
table (runs whose kind starts with ``score``) and the audit log (actions containing ``score``).

The lead wires it from :class:`~coordinator.server.CoordinatorServer`::

    self._dashboard = start_dashboard(self, self.config.dashboard) if self.config.dashboard.listen else None
    ...
    if self._dashboard: self._dashboard.stop()
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import html
import json
import logging
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from fedcore import telemetry as metrics
from fedcore.config import Section, check_listen
from fedcore.errors import InvalidInput
from fedcore.secret import write_private_file

if TYPE_CHECKING:
    from .server import CoordinatorServer

log = logging.getLogger(__name__)

__all__ = ["COOKIE", "DashboardHandle", "DashboardSettings", "ensure_token", "overview", "start_dashboard"]

COOKIE = "fc_dashboard"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'"


class DashboardSettings(Section):
    """``[dashboard]`` of ``coordinator.toml``."""

    # HOST:PORT of the dashboard and /metrics; empty = off.
    listen: str = ""
    # The admin's dashboard token, relative to the coordinator's home; created at first start (0600).
    token_file: Path = Path("admin/dashboard.token")
    refresh_s: int = pydantic.Field(default=10, ge=0, le=3600)
    # A login session lasts this long (then the form asks for the token again).
    session_ttl_s: float = pydantic.Field(default=8 * 3600, gt=0, le=30 * 86400)
    # After this many wrong tokens from one address, that address is locked out for login_lockout_s
    # (doubling with each further lockout, up to a day); bearer and basic credentials count too.
    login_max_failures: int = pydantic.Field(default=5, ge=1, le=1000)
    login_lockout_s: float = pydantic.Field(default=60.0, gt=0, le=86400)

    @pydantic.field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return check_listen(v, allow_empty=True)


def ensure_token(path: Path) -> str:
    """The dashboard token at ``path``, made (random, 0600) if it does not exist yet."""
    if not path.is_file():
        write_private_file(path, (secrets.token_urlsafe(32) + "\n").encode())
        log.info("created the dashboard token in %s", path)
    token = path.read_text().strip()
    if len(token) < 16:
        raise InvalidInput(f"the dashboard token in {path} is too short (16 characters at least)")
    return token


# ------------------------------------------------------------------------------------------- data


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def overview(server: CoordinatorServer) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready data (names, counts and metrics only)."""
    parties = []
    for p in server.hub.parties():
        parties.append({
            "name": p.name, "role": p.role.value, "online": p.online, "last_seen": p.last_seen,
            "tables": [{"name": t.name, "rows": t.rows, "features": len(t.features), "labels": t.has_labels}
                       for t in p.summary.tables],
        })
    runs, models = [], []
    scoring: Counter[str] = Counter()
    for r in sorted(server.state.runs(), key=lambda r: r.created_at, reverse=True):
        curve = []
        for h in r.result.get("history", []) if isinstance(r.result, dict) else []:
            ev = h.get("evaluate", {})
            if "val-auc" in ev:
                curve.append({"round": h.get("round"), "auc": ev.get("val-auc"), "ks": ev.get("val-ks")})
        runs.append({"run_id": r.run_id, "kind": r.kind, "status": r.status, "created": r.created_at,
                     "updated": r.updated_at, "error": r.result.get("error", ""), "curve": curve,
                     "dropped": [{"party": str(d.get("party")), "round": d.get("round"), "at": d.get("at")}
                                 for d in r.result.get("dropped", []) if isinstance(d, dict)]})
        if r.kind in ("train", "vertical") and r.status == "succeeded":
            res = r.result  # validation AUC/KS of the pooled scores (coordinator.pooled), as in the report
            models.append({"run_id": r.run_id, "version": str(res.get("version", "")), "model": res.get("model", ""),
                           "metrics": res.get("summary_metrics") or res.get("metrics", {}),
                           "parties": res.get("parties", []),
                           "secure": res.get("secure", ""), "model_sha256": str(res.get("model_sha256", ""))[:16],
                           "created": r.created_at})
        if r.kind.startswith("score"):
            scoring[_day(r.created_at)] += int(r.result.get("count", 1) or 1)
    for a in server.state.audit_log():
        if "score" in a.action:
            scoring[_day(a.at)] += int(a.detail.get("count", 1) or 1)
    return {
        "generated": time.time(),
        "parties": parties,
        "runs": runs,
        "models": models,
        "scoring_per_day": [{"day": d, "count": c} for d, c in sorted(scoring.items())],
        "scoring_source": "run table (kinds score*) and audit log (actions *score*); no scoring request log yet",
    }


# ------------------------------------------------------------------------------------------ views


def _svg_curve(run_id: str, curve: list[dict[str, Any]], w: int = 320, h: int = 120) -> str:
    pts = [(c["round"], c["auc"], c["ks"]) for c in curve if c.get("auc") is not None]
    if not pts:
        return ""
    vals = [v for _, a, k in pts for v in (a, k) if v is not None]
    lo, hi = max(0.0, min(vals) - 0.02), min(1.0, max(vals) + 0.02)
    if hi - lo < 0.05:
        hi = lo + 0.05
    r_max = max(1, max(r for r, _, _ in pts))
    pad = 28

    def xy(r: float, v: float) -> str:
        x = pad + (w - pad - 6) * ((r - 1) / max(1, r_max - 1) if r_max > 1 else 0.5)
        y = 6 + (h - 24) * (1 - (v - lo) / (hi - lo))
        return f"{x:.1f},{y:.1f}"

    auc = " ".join(xy(r, a) for r, a, _ in pts)
    ks = " ".join(xy(r, k) for r, _, k in pts if k is not None)
    last = pts[-1]
    e = html.escape
    return (
        f'<svg class="curve" data-run="{e(run_id)}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="validation AUC and KS per round of {e(run_id)}">'
        f'<rect x="{pad}" y="6" width="{w - pad - 6}" height="{h - 24}" fill="#fafafa" stroke="#ddd"/>'
        f'<text x="2" y="14" font-size="9">{hi:.2f}</text><text x="2" y="{h - 18}" font-size="9">{lo:.2f}</text>'
        f'<text x="{pad}" y="{h - 4}" font-size="9">round 1</text>'
        f'<text x="{w - 50}" y="{h - 4}" font-size="9">round {r_max}</text>'
        f'<polyline class="curve-auc" fill="none" stroke="#1f77b4" stroke-width="2" points="{auc}"/>'
        f'<polyline class="curve-ks" fill="none" stroke="#ff7f0e" stroke-width="2" points="{ks}"/>'
        f'<text x="{pad + 4}" y="18" font-size="10" fill="#1f77b4">AUC {last[1]:.3f}</text>'
        f'<text x="{pad + 70}" y="18" font-size="10" fill="#ff7f0e">KS {(last[2] or 0):.3f}</text></svg>'
    )


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    s = max(0.0, time.time() - ts)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.0f} h ago"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


PAGE_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.2em}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.online{color:#0a7d28;font-weight:bold}.offline{color:#b00020;font-weight:bold}
.muted{color:#777;font-size:.9em}h2{margin-top:1.4em}"""


def _page(title: str, body: str, refresh_s: int = 0) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (f'<!doctype html><html><head><meta charset="utf-8">{meta}<title>{html.escape(title)}</title>'
            f"<style>{PAGE_STYLE}</style></head><body>{body}</body></html>").encode()


def _tables(tables: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['name']}: {t['rows']} rows" for t in tables)


def _dropped(run: dict[str, Any]) -> str:
    items = [f"{d['party']} in round {d['round']} ({_when(float(d['at'] or 0))})" for d in run.get("dropped", [])]
    return f'<div class="dropped">dropped out: {html.escape(", ".join(items))}</div>' if items else ""


def render_overview(data: dict[str, Any], refresh_s: int) -> bytes:
    e = html.escape
    parties = "".join(
        f'<tr class="party" data-party="{e(p["name"])}"><td>{e(p["name"])}</td><td>{e(p["role"])}</td>'
        f'<td class="{"online" if p["online"] else "offline"}">{"live" if p["online"] else "offline"}</td>'
        f"<td>{_ago(p['last_seen'])}</td><td>{e(_tables(p['tables']))}</td></tr>"
        for p in data["parties"]) or '<tr><td colspan="5">no parties admitted</td></tr>'
    runs = "".join(
        f'<tr class="run" data-run="{e(r["run_id"])}"><td>{e(r["run_id"])}</td><td>{e(r["kind"])}</td>'
        f'<td>{e(r["status"])}</td><td>{_when(r["created"])}</td>'
        f'<td>{_svg_curve(r["run_id"], r["curve"]) or e(str(r["error"])[:120])}{_dropped(r)}</td></tr>'
        for r in data["runs"]) or '<tr><td colspan="5">no runs yet</td></tr>'
    models = "".join(
        f'<tr class="model" data-run="{e(m["run_id"])}"><td>{e(m["model"])}</td><td>v{e(m["version"])}</td>'
        f'<td>{e(m["run_id"])}</td><td>{m["metrics"].get("val_auc", float("nan")):.4f}</td>'
        f'<td>{m["metrics"].get("val_ks", float("nan")):.4f}</td><td>{e(", ".join(m["parties"]))}</td>'
        f'<td>{e(m["secure"])}</td><td><code>{e(m["model_sha256"])}</code></td></tr>'
        for m in data["models"]) or '<tr><td colspan="8">no models yet</td></tr>'
    scoring = "".join(f"<tr><td>{e(s['day'])}</td><td>{s['count']}</td></tr>" for s in data["scoring_per_day"]) \
        or '<tr><td colspan="2">no scoring yet</td></tr>'
    live = sum(1 for p in data["parties"] if p["online"])
    body = f"""<h1>fedcredit coordinator</h1>
<p class="muted">{live} of {len(data['parties'])} parties live &middot; {len(data['runs'])} runs &middot;
{len(data['models'])} models &middot; updated {_when(data['generated'])} &middot; <a href="/api/overview">JSON</a>
&middot; <a href="/metrics">metrics</a> &middot; <a href="/logout">log out</a></p>
<h2>Parties</h2><table id="parties"><tr><th>party</th><th>role</th><th>link</th><th>last seen</th><th>data</th></tr>
{parties}</table>
<h2>Models</h2><table id="models"><tr><th>model</th><th>version</th><th>training run</th><th>val AUC</th><th>val KS</th>
<th>parties</th><th>aggregation</th><th>model SHA-256</th></tr>{models}</table>
<h2>Runs</h2><p class="muted">Per-round validation <span style="color:#1f77b4">AUC</span> and
<span style="color:#ff7f0e">KS</span> (weighted over the parties' validation splits).</p>
<table id="runs"><tr><th>run</th><th>kind</th><th>status</th><th>started</th><th>curve / error</th></tr>{runs}</table>
<h2>Scoring volume per day</h2><p class="muted">Counts only; source: {e(data['scoring_source'])}.</p>
<table id="scoring"><tr><th>day (UTC)</th><th>requests</th></tr>{scoring}</table>"""
    return _page("fedcredit dashboard", body, refresh_s)


LOGIN = """<h1>fedcredit coordinator</h1><form method="post" action="/login">
<p>Admin dashboard token (in <code>COORD_HOME/admin/dashboard.token</code>):</p>
<input type="password" name="token" id="token" size="50" autofocus> <button type="submit" id="login">Log in</button>
</form>"""


# ----------------------------------------------------------------------------------------- server


class DashboardHandle:
    """A running dashboard: ``.port``, ``.url``, ``.stop()``."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        self.port = int(port)
        self.url = f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class Sessions:
    """Login sessions (random ids that expire) and per-address login throttling."""

    def __init__(self, config: DashboardSettings, clock: Callable[[], float]) -> None:
        self._ttl = config.session_ttl_s
        self._max_failures = config.login_max_failures
        self._lockout = config.login_lockout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, float] = {}  # sha256(session id) -> expiry
        self._failures: dict[str, tuple[int, int, float]] = {}  # address -> (failures, lockouts, locked until)

    def new(self) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._sessions = {k: t for k, t in self._sessions.items() if t > now}
            self._sessions[hashlib.sha256(sid.encode()).hexdigest()] = now + self._ttl
        return sid

    def valid(self, sid: str) -> bool:
        key = hashlib.sha256(sid.encode()).hexdigest()
        with self._lock:
            expiry = self._sessions.get(key)
            if expiry is None:
                return False
            if expiry <= self._clock():
                del self._sessions[key]
                return False
            return True

    def end(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(hashlib.sha256(sid.encode()).hexdigest(), None)

    def locked_for(self, address: str) -> float:
        """Seconds ``address`` must still wait before it may try a token again (0: it may)."""
        with self._lock:
            _, _, until = self._failures.get(address, (0, 0, 0.0))
            return max(0.0, until - self._clock())

    def failed(self, address: str) -> None:
        with self._lock:
            failures, lockouts, until = self._failures.get(address, (0, 0, 0.0))
            failures += 1
            if failures >= self._max_failures:
                until = self._clock() + min(86400.0, self._lockout * 2**lockouts)
                failures, lockouts = 0, lockouts + 1
                log.warning("dashboard: %s locked out of login after repeated wrong tokens", address)
            if len(self._failures) > 10_000:  # bounded: forget the oldest addresses
                self._failures.pop(next(iter(self._failures)))
            self._failures[address] = (failures, lockouts, until)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


def start_dashboard(
    server: CoordinatorServer, config: DashboardSettings, clock: Callable[[], float] = time.monotonic
) -> DashboardHandle:
    """Serve the dashboard of ``server`` on ``config.listen`` (a thread); raises InvalidInput if it cannot.

    ``clock`` (monotonic seconds) times session expiry and login lockouts."""
    if not config.listen:
        raise InvalidInput("the dashboard is off: set [dashboard] listen = \"HOST:PORT\"")
    token_path = config.token_file if config.token_file.is_absolute() else server.config.home / config.token_file
    token = ensure_token(token_path)
    sessions = Sessions(config, clock)
    ttl = int(config.session_ttl_s)
    metrics.watch_links(server.hub.online)
    refresh = config.refresh_s

    class Handler(BaseHTTPRequestHandler):
        server_version = "fedcredit-dashboard"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard %s: %s", self.address_string(), format % args)

        def _send(self, code: int, body: bytes, ctype: str = "text/html; charset=utf-8",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy", CSP)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _check_token(self, given: str) -> bool:
            """A token attempt; wrong ones count towards this address's lockout."""
            address = self.client_address[0]
            if hmac.compare_digest(given.encode(), token.encode()):
                sessions.succeeded(address)
                return True
            log.warning("dashboard: wrong token from %s", address)
            metrics.count_error("coordinator", "dashboard_login")
            sessions.failed(address)
            return False

        def _cookie(self) -> str:
            for part in self.headers.get("Cookie", "").split(";"):
                k, _, v = part.strip().partition("=")
                if k == COOKIE:
                    return v
            return ""

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if auth.startswith(("Bearer ", "Basic ")) and sessions.locked_for(self.client_address[0]) > 0:
                return False
            if auth.startswith("Bearer "):
                return self._check_token(auth[7:].strip())
            if auth.startswith("Basic "):
                try:
                    _, _, pw = base64.b64decode(auth[6:].strip()).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return False
                return self._check_token(pw)
            sid = self._cookie()
            return bool(sid) and sessions.valid(sid)

        def _deny(self) -> None:
            if self.path.startswith(("/api/", "/metrics")):
                self._send(401, b'{"error": "unauthenticated"}\n', "application/json",
                           {"WWW-Authenticate": 'Basic realm="fedcredit"'})
            else:
                self._send(303, b"", headers={"Location": "/login"})

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            try:
                if path == "/login":
                    self._send(200, _page("fedcredit: log in", LOGIN))
                    return
                if path == "/logout":
                    sessions.end(self._cookie())
                    gone = f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"
                    self._send(303, b"", headers={"Location": "/login", "Set-Cookie": gone})
                    return
                if not self._authorized():
                    self._deny()
                    return
                if path == "/":
                    self._send(200, render_overview(overview(server), refresh))
                elif path == "/api/overview":
                    self._send(200, json.dumps(overview(server)).encode(), "application/json")
                elif path == "/metrics":
                    self._send(200, metrics.render(), metrics.CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                else:
                    self._send(404, _page("not found", "<p>not found</p>"))
            except Exception:
                log.exception("dashboard request %s failed", path)
                metrics.count_error("coordinator", "dashboard")
                self._send(500, _page("error", "<p>internal error (see the coordinator's log)</p>"))

        def do_POST(self) -> None:
            if urllib.parse.urlsplit(self.path).path != "/login":
                self._send(405, b"")
                return
            n = min(int(self.headers.get("Content-Length", "0") or 0), 4096)
            form = urllib.parse.parse_qs(self.rfile.read(n).decode("utf-8", "replace"))
            given = (form.get("token") or [""])[0].strip()
            wait = sessions.locked_for(self.client_address[0])
            if wait > 0:
                self._send(429, _page("fedcredit: log in", '<p class="offline">too many wrong tokens; try again in '
                                      f"{wait:.0f} s</p>" + LOGIN), headers={"Retry-After": str(int(wait) + 1)})
            elif given and self._check_token(given):
                cookie = f"{COOKIE}={sessions.new()}; Max-Age={ttl}; Path=/; HttpOnly; SameSite=Strict"
                self._send(303, b"", headers={"Location": "/", "Set-Cookie": cookie})
            else:
                self._send(401, _page("fedcredit: log in", '<p class="offline">wrong token</p>' + LOGIN))

    host, _, port = config.listen.rpartition(":")
    try:
        httpd = ThreadingHTTPServer((host, int(port)), Handler)
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {config.listen} for the dashboard: {exc.strerror or exc}") from None
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="dashboard-http", daemon=True)
    thread.start()
    handle = DashboardHandle(httpd, thread)
    log.info("dashboard on %s (token in %s)", handle.url, token_path)
    return handle
