"""The dashboard end to end in headless Chromium (Debian's ``chromium`` driven by the ``playwright``
package; installed by this test when missing, never skipped): an in-process coordinator with mutual TLS,
three lender nodes and the platform, a completed HE-secured training run; the browser logs in and sees
the parties, the run's AUC/KS curve and the model; a screenshot is saved as PNG. Then the model's report
(`coordinator report`'s job and HTML) opens in the same browser: every chart loads, and the sections a
credit analyst reads (intervals, bands, calibration, stability) are there with their numbers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

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
        _check_report(fed.server, run_id, exe, tmp_path)
    finally:
        fed.stop()


def _check_report(server: Any, run_id: str, exe: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from coordinator.report import render_report

    report = wait_run(server, server.runs.start("report", {"model_run": run_id}, actor="admin"))
    assert report.status == "succeeded", report.result
    page_file = render_report(report.result, tmp_path / "report")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(page_file.as_uri())
        headings = page.locator("h2").all_inner_texts()
        for section in ("Summary", "Confidence intervals", "Curves", "Bad rate by score band", "Calibration",
                        "Population stability"):
            assert any(h.startswith(section) for h in headings), (section, headings)
        images = page.locator("img")
        assert images.count() >= 5  # ROC, KS, score distribution, bands, calibration
        widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert all(w > 200 for w in widths), widths  # every chart file loaded and decoded
        bands = page.locator("h2:has-text('Bad rate by score band') ~ table").first.locator("tr")
        assert bands.count() >= 3  # header and at least two bands with counts and rates
        assert "%" in bands.nth(1).inner_text()
        assert "Hosmer-Lemeshow" in page.inner_text("body")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
