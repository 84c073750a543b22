"""A pass after each new platform snapshot: the platform announces the snapshot's date through the
coordinator; every lender gets the date and nothing else; a lender that monitors runs a pass (its alerts
stay with it); only the platform may announce, and only a date."""

from __future__ import annotations

import json
import threading

import pytest

from fedcore.errors import InvalidInput, PermissionDenied
from fedcore.protocol.preapproval.messages import SNAPSHOT
from fedcore.protocol.preapproval.party import SnapshotListener
from party_node.audit import AuditLog
from party_node.monitoring import Monitor, MonitorSettings, PassReport
from party_node.monitoring_cli import SnapshotPasses


class Watched(Monitor):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.done = threading.Event()
        self.reports: list[PassReport] = []

    def run(self, trigger: str = "") -> PassReport:
        rep = super().run(trigger)
        self.reports.append(rep)
        self.done.set()
        return rep


def test_a_snapshot_announcement_starts_a_pass_at_the_lenders_that_monitor(fed):
    mon = Watched(fed.services["lender_a"], MonitorSettings(model_id="m1", pd_threshold=0.3))
    assert mon.register_book() > 0
    heard: dict[str, list[str]] = {}
    for name, party in fed.lenders.items():  # lender_a monitors; the others only listen
        make = (lambda: mon) if name == "lender_a" else (lambda: None)
        passes = SnapshotPasses(make)

        def fire(as_of: str, name: str = name, passes: SnapshotPasses = passes) -> None:
            heard.setdefault(name, []).append(as_of)
            passes.fire(as_of)

        SnapshotListener(fire, AuditLog.for_home(party.home)).register(fed.registries[name])
    assert fed.coordinator.announce_snapshot("platform", "2024-03-03") == 3
    assert mon.done.wait(60)
    assert mon.reports[0].book > 0
    assert heard == {n: ["2024-03-03"] for n in fed.lenders}
    passes = [e for e in _audit(fed.lenders["lender_a"]) if e["event"] == "monitoring_pass"]
    assert passes[-1]["trigger"] == "snapshot 2024-03-03"
    # on the wire: the date and nothing else, to lenders only; nothing comes back but an acknowledgement
    sent = [r for r in fed.channel.wire_log if r.kind == SNAPSHOT]
    assert {r.party for r in sent if r.direction == "to_party"} == set(fed.lenders)
    assert all(r.params == {"as_of": "2024-03-03"} and not r.payload for r in sent if r.direction == "to_party")
    assert all(set(r.params) <= {"ack"} for r in sent if r.direction == "from_party")
    assert "alert" not in json.dumps([r.params for r in fed.channel.wire_log if r.party != "lender_a"])


def test_only_the_platform_announces_and_only_a_date(fed):
    with pytest.raises(PermissionDenied, match="platform"):
        fed.coordinator.announce_snapshot("lender_a", "2024-03-03")
    with pytest.raises(InvalidInput, match="as_of"):
        fed.coordinator.announce_snapshot("platform", "2024-03-03; id=13900000010")
    assert not [r for r in fed.channel.wire_log if r.kind == SNAPSHOT]


def _audit(party) -> list[dict]:
    return [json.loads(x) for x in (party.home / "audit" / "scoring.log").read_text().splitlines() if x.strip()]


def test_a_failed_pass_does_not_stop_the_next_and_dates_during_a_pass_give_one_more():
    release, started, calls = threading.Event(), threading.Event(), []
    finished = threading.Semaphore(0)

    class Slow:
        def run(self, trigger: str = "") -> None:
            calls.append(trigger)
            started.set()
            release.wait(30)
            finished.release()

    def make():
        if not calls and not started.is_set() and not getattr(make, "failed", False):
            make.failed = True
            raise RuntimeError("store unavailable")
        return Slow()

    passes = SnapshotPasses(make)
    passes.fire("2024-03-03")  # this pass fails to start
    passes.fire("2024-03-10")
    assert started.wait(30)
    passes.fire("2024-03-17")  # while a pass runs: these two give one more pass, with the latest date
    passes.fire("2024-03-24")
    release.set()
    assert finished.acquire(timeout=30) and finished.acquire(timeout=30)
    assert calls[-1] == "snapshot 2024-03-24" and "snapshot 2024-03-17" not in calls
