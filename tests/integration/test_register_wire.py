"""An ingest-and-register flow over the real link: every message the party sends holds names, types
and counts, never a raw id or a feature value."""

from __future__ import annotations

import csv
import struct
import threading

from coordinator.config import load_coordinator_config
from coordinator.link import PartyLinkServicer
from coordinator.server import CoordinatorServer
from party_node.config import load_party_config
from party_node.node import PartyNode
from tests.conftest import make_homes


def test_registration_and_heartbeats_carry_no_ids_or_values(tmp_path, monkeypatch):
    import subprocess
    import sys

    homes = make_homes(tmp_path / "fed", {"yixin": "lender"})
    data = tmp_path / "data"
    from pathlib import Path

    synthesize = Path(__file__).resolve().parents[2] / "scripts" / "synthesize.py"
    subprocess.run([sys.executable, str(synthesize), "--out", str(data), "--people", "3000", "--seed", "3"],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "fedcore.cli", "party", "ingest", str(data / "yixin/applications.csv"),
                    "--schema", str(data / "yixin/applications.toml"), "--home", str(homes.parties["yixin"]),
                    "--quiet"], check=True, capture_output=True)
    with open(data / "yixin/applications.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 100

    seen: list[bytes] = []
    original = PartyLinkServicer.Connect

    def recording(self, request_iterator, context):
        def tap():
            for msg in request_iterator:
                seen.append(msg.SerializeToString())
                yield msg
        return original(self, tap(), context)

    monkeypatch.setattr(PartyLinkServicer, "Connect", recording)
    srv = CoordinatorServer(load_coordinator_config(homes.coordinator), port=0)
    srv.start()
    monkeypatch.setenv("FEDCREDIT_COORDINATOR__ADDRESS", f"127.0.0.1:{srv.port}")
    node = PartyNode(load_party_config(homes.parties["yixin"]))
    t = threading.Thread(target=node.link.run, daemon=True)
    t.start()
    try:
        assert srv.hub.wait_online(["yixin"], 10)
        summary = srv.hub.parties()[0].summary
        ds = summary.tables[0]
        assert ds.rows == len(rows) and "age" in {f.name for f in ds.features}
        import time
        end = time.monotonic() + 120
        while len(seen) < 3 and time.monotonic() < end:  # Register and a couple of heartbeats: a state
            time.sleep(0.05)
    finally:
        node.link.stop()
        srv.stop(0.5)

    assert len(seen) >= 2  # Register + heartbeats
    wire = b"".join(seen)
    ids = {r["applicant_id"] for r in rows}
    assert not any(i.encode() in wire for i in ids)
    categorical = {r[c] for r in rows for c in ("city_tier", "vehicle_type")}
    assert not any(v.encode() in wire for v in categorical if v)
    for r in rows[:300]:  # no numeric value as text or as a float32/float64
        for col in ("monthly_income", "loan_amount", "vehicle_price"):
            v = float(r[col])
            assert struct.pack("<d", v) not in wire and struct.pack("<f", v) not in wire
            assert r[col].encode() not in wire or len(r[col]) < 4
