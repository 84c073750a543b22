"""A horizontal run that lost a lender says so where operators look: `coordinator runs` and the dashboard."""

from __future__ import annotations

import time

from coordinator.cli import dropped_text
from coordinator.dashboard import render_overview


def test_runs_listing_and_dashboard_name_the_dropped_party_and_round() -> None:
    at = time.time()
    result = {"parties": ["guest", "host1"], "dropped": [{"party": "host2", "round": 2.0, "at": at}]}  # via Struct
    text = dropped_text(result)
    assert text.startswith("host2 (round 2, ") and dropped_text({"parties": ["a"]}) == ""
    run = {"run_id": "r1", "kind": "train", "status": "succeeded", "created": at, "updated": at, "error": "",
           "curve": [], "dropped": result["dropped"]}
    page = render_overview({"generated": at, "parties": [], "runs": [run], "models": [], "scoring_per_day": [],
                            "scoring_source": "-"}, 10).decode()
    assert 'class="dropped"' in page and "host2 in round 2" in page
