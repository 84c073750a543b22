"""Every long-running process logs one JSON object per line when asked (FEDCREDIT_LOG_JSON=1)."""

from __future__ import annotations

import json

import pytest

from scripts.localfed import LocalFederation

pytestmark = pytest.mark.slow


def test_coordinator_and_party_processes_log_json_lines(tmp_path):
    fed = LocalFederation(tmp_path, {"yixin": "lender", "tiange": "platform"}, env={"FEDCREDIT_LOG_JSON": "1"})
    fed.setup()
    with fed:
        fed.start()
        fed.wait_online(timeout=300)
        fed.cli("coordinator", "probe", "yixin", "--count", "3", "--home", str(fed.coordinator_home))
        fed.stop()
    for name in ("coordinator", "yixin", "tiange"):
        lines = [ln for ln in (fed.logs / f"{name}.log").read_text().splitlines() if ln.strip()]
        assert len(lines) >= 2, name
        records = [json.loads(ln) for ln in lines]  # raises if any line is not JSON
        assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
        assert any("connected" in r["msg"] or "registered" in r["msg"] for r in records), name
