"""The dashboard end to end in headless Chromium (Debian's ``chromium`` driven by the ``playwright``
package; installed by this test when missing, never skipped): an in-process coordinator with mutual TLS,
three lender nodes and the platform, a completed HE-secured training run; the browser logs in and sees
the parties, the run's AUC/KS curve and the model; a screenshot is saved as PNG."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from coordinator.dashboard import DashboardSettings, start_dashboard
from tests.unit.coordinator.dashboard_fed import LENDERS3, lender_arrays, start_in_process, wait_run

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def ensure_chromium() -> str:
    if not Path(CHROMIUM).exists():
        if shutil.which("apt-get") is None:
            raise RuntimeError("chromium is missing and apt-get is not available to install it")
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, timeout=900,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return CHROMIUM


def test_dashboard_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    exe = ensure_chromium()
    data = lender_arrays(people=8000)
    fed = start_in_process(tmp_path / "fed", data)
    try:
        run_id = fed.server.runs.start("train", {"kind": "horizontal", "parties": list(LENDERS3), "model": "logistic",
                                                 "rounds": 3, "secure": "he"}, actor="admin")
        run = wait_run(fed.server, run_id)
        assert run.status == "succeeded", run.result
        handle = start_dashboard(fed.server, DashboardSettings(listen="127.0.0.1:0", refresh_s=0))
        token = (fed.server.config.home / "admin" / "dashboard.token").read_text().strip()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=exe, args=ARGS, headless=True)
                page = browser.new_page()
                page.goto(handle.url + "/")
                assert page.url.endswith("/login")
                page.fill("#token", token)
                page.click("#login")
                page.wait_for_selector("table#parties")
                for name in (*LENDERS3, "tiange"):
                    row = page.locator(f'tr.party[data-party="{name}"]')
                    assert row.count() == 1 and "live" in row.inner_text()
                curve = page.locator(f'svg.curve[data-run="{run_id}"] polyline.curve-auc')
                assert curve.count() == 1
                assert len(curve.get_attribute("points").split()) == 3  # one point per round
                model = page.locator(f'tr.model[data-run="{run_id}"]')
                assert model.count() == 1 and "logistic" in model.inner_text() and "v1" in model.inner_text()
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                browser.close()
            png = shot.read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        finally:
            handle.stop()
    finally:
        fed.stop()
