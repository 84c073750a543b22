"""The dashboard over HTTP against an in-process coordinator with live parties: token file (0600),
authentication (login form cookie, bearer, basic), overview content, JSON and /metrics."""

from __future__ import annotations

import base64
import os
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.dashboard import COOKIE, DashboardSettings, start_dashboard
from tests.unit.coordinator.dashboard_fed import InProcessFed, start_in_process


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessFed, Any, str]]:
    import numpy as np

    rng = np.random.default_rng(0)
    data = {"yixin": (rng.normal(size=(200, 3)), rng.integers(0, 2, 200))}
    fed = start_in_process(tmp_path_factory.mktemp("dash"), data)
    handle = start_dashboard(fed.server, DashboardSettings(listen="127.0.0.1:0"))
    token = (fed.server.config.home / "admin" / "dashboard.token").read_text().strip()
    yield fed, handle, token
    handle.stop()
    fed.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:  # noqa: S310 (loopback http)
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_token_file_is_private(dash: tuple[InProcessFed, Any, str]) -> None:
    fed, _, token = dash
    path = fed.server.config.home / "admin" / "dashboard.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(token) >= 32


def test_requires_credentials(dash: tuple[InProcessFed, Any, str]) -> None:
    _, h, token = dash
    code, headers, _ = _get(h.url + "/")
    assert code == 303 and headers["Location"] == "/login"
    assert _get(h.url + "/api/overview")[0] == 401
    assert _get(h.url + "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert _get(h.url + "/api/overview", {"Authorization": f"Bearer {token}x"})[0] == 401


def test_login_cookie_and_overview(dash: tuple[InProcessFed, Any, str]) -> None:
    _, h, token = dash
    opener = urllib.request.build_opener(_NoRedirect)
    body = urllib.parse.urlencode({"token": "nope"}).encode()
    with pytest.raises(urllib.error.HTTPError) as bad:
        opener.open(urllib.request.Request(h.url + "/login", data=body), timeout=10)  # noqa: S310
    assert bad.value.code == 401
    body = urllib.parse.urlencode({"token": token}).encode()
    with pytest.raises(urllib.error.HTTPError) as ok:  # 303 is not followed
        opener.open(urllib.request.Request(h.url + "/login", data=body), timeout=10)  # noqa: S310
    assert ok.value.code == 303
    cookie = ok.value.headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith(COOKIE + "=") and token not in cookie
    code, _, page = _get(h.url + "/", {"Cookie": cookie})
    assert code == 200
    for name in ("yixin", "tiange"):
        assert f'data-party="{name}"' in page
    assert "live" in page


def test_api_and_metrics(dash: tuple[InProcessFed, Any, str]) -> None:
    import json

    _, h, token = dash
    code, _, text = _get(h.url + "/api/overview", {"Authorization": f"Bearer {token}"})
    assert code == 200
    data = json.loads(text)
    assert {p["name"]: p["online"] for p in data["parties"]} == {"yixin": True, "tiange": True}
    basic = base64.b64encode(f"prometheus:{token}".encode()).decode()
    code, headers, text = _get(h.url + "/metrics", {"Authorization": f"Basic {basic}"})
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'fedcredit_links_up{role="coordinator"} 2.0' in text


def test_settings_validation(tmp_path: Path) -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError):
        DashboardSettings(listen="nohost")
    assert DashboardSettings().listen == ""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _login(url: str, token: str) -> tuple[int, dict[str, str]]:
    opener = urllib.request.build_opener(_NoRedirect)
    body = urllib.parse.urlencode({"token": token}).encode()
    try:
        with opener.open(urllib.request.Request(url + "/login", data=body), timeout=10) as r:  # noqa: S310
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_session_expires_and_logout_ends_it(dash: tuple[InProcessFed, Any, str]) -> None:
    fed, _, token = dash
    clock = FakeClock()
    h = start_dashboard(fed.server, DashboardSettings(listen="127.0.0.1:0", session_ttl_s=600), clock=clock)
    try:
        code, headers = _login(h.url, token)
        assert code == 303 and "Max-Age=600" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";")[0]
        assert _get(h.url + "/", {"Cookie": cookie})[0] == 200
        clock.now += 599
        assert _get(h.url + "/", {"Cookie": cookie})[0] == 200
        clock.now += 2
        code, hdrs, _ = _get(h.url + "/", {"Cookie": cookie})
        assert code == 303 and hdrs["Location"] == "/login"
        # a fresh session, then logout: the cookie is dead at the server, not only in the browser
        cookie = _login(h.url, token)[1]["Set-Cookie"].split(";")[0]
        assert _get(h.url + "/", {"Cookie": cookie})[0] == 200
        _get(h.url + "/logout", {"Cookie": cookie})
        assert _get(h.url + "/", {"Cookie": cookie})[0] == 303
    finally:
        h.stop()


def test_login_throttled_after_wrong_tokens(dash: tuple[InProcessFed, Any, str]) -> None:
    fed, _, token = dash
    clock = FakeClock()
    settings = DashboardSettings(listen="127.0.0.1:0", login_max_failures=3, login_lockout_s=60)
    h = start_dashboard(fed.server, settings, clock=clock)
    try:
        for _ in range(3):
            assert _login(h.url, "guess")[0] == 401
        code, headers = _login(h.url, token)  # even the right token waits out the lockout
        assert code == 429 and int(headers["Retry-After"]) >= 60
        assert _get(h.url + "/api/overview", {"Authorization": f"Bearer {token}"})[0] == 401
        clock.now += 61
        # a second lockout in a row lasts twice as long
        for _ in range(3):
            assert _login(h.url, "guess")[0] == 401
        clock.now += 61
        assert _login(h.url, token)[0] == 429
        clock.now += 60
        assert _login(h.url, token)[0] == 303
    finally:
        h.stop()
