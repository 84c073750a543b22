"""The hash-chained scoring audit log: appends survive reopening; any edit, deletion or truncation is found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcore.errors import InvalidInput
from party_node.audit import AuditLog, verify


def _fill(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append("score_request", {"request_id": f"r{i}", "n": i + 1, "model_id": "m"})
    return log


def test_chain_verifies_and_survives_reopen(tmp_path: Path) -> None:
    p = tmp_path / "audit" / "scoring.log"
    _fill(p, 3)
    again = AuditLog(p)
    again.append("score_contribution", {"request_id": "r9"})
    res = verify(p)
    assert res.ok and res.records == 4, str(res)
    assert verify(tmp_path / "none.log").ok


@pytest.mark.parametrize("tamper", ["edit", "delete_middle", "truncate_tail", "reorder", "garbage"])
def test_verify_detects_tampering(tmp_path: Path, tamper: str) -> None:
    p = tmp_path / "scoring.log"
    _fill(p, 5)
    lines = p.read_text().splitlines()
    if tamper == "edit":
        rec = json.loads(lines[2])
        rec["n"] = 999
        lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    elif tamper == "delete_middle":
        del lines[1]
    elif tamper == "truncate_tail":
        lines = lines[:-1]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[3] = "{not json"
    p.write_text("\n".join(lines) + "\n")
    res = verify(p)
    assert not res.ok
    assert "BROKEN" in str(res)


def test_reserved_fields_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        AuditLog(tmp_path / "a.log").append("x", {"hash": "0"})


def test_cli_audit_verify(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from party_node.scoring_cli import app

    p = tmp_path / "audit" / "scoring.log"
    _fill(p, 3)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--home", str(tmp_path)])
    assert ok.exit_code == 0 and "OK: 3 records" in ok.output
    p.write_text(p.read_text().replace('"n":2', '"n":3'))
    bad = runner.invoke(app, ["audit", "verify", "--home", str(tmp_path)])
    assert bad.exit_code == 1 and "line 2" in bad.output


def test_two_writers_keep_one_chain(tmp_path: Path) -> None:
    p = tmp_path / "scoring.log"
    a, b = AuditLog(p), AuditLog(p)  # e.g. the node and the CLI
    for i in range(4):
        (a if i % 2 else b).append("score_request", {"i": i})
    assert verify(p).ok and verify(p).records == 4


@pytest.mark.parametrize("interval", [None, 0.05])
def test_durability_modes_keep_the_chain(tmp_path: Path, interval: float | None) -> None:
    p = tmp_path / "scoring.log"
    log = AuditLog(p, fsync_interval_s=interval)
    for i in range(3):
        log.append("score_request", {"i": i})
    log.close()
    res = verify(p)
    assert res.ok and res.records == 3
    assert (tmp_path / "scoring.log.head").read_text().split()[1] == res.head


def test_runs_of_appends_from_each_writer_keep_one_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tail is re-read only when another writer grew the file; runs of appends from each writer
    still chain onto the other's last record."""
    p = tmp_path / "scoring.log"
    a, b = AuditLog(p), AuditLog(p)
    reads: list[int] = []
    real_tail = AuditLog._tail

    def counting(self: AuditLog) -> tuple[int, str]:
        reads.append(1)
        return real_tail(self)

    monkeypatch.setattr(AuditLog, "_tail", counting)
    for i in range(3):
        a.append("score_request", {"i": i})
    assert len(reads) == 1  # the first append of a (size unknown); then its own appends only
    for i in range(3, 5):
        b.append("score_request", {"i": i})
    a.append("score_request", {"i": 5})
    assert len(reads) == 3  # b's first append and a's after b
    res = verify(p)
    assert res.ok and res.records == 6


def test_for_home_shares_one_log_per_file_until_it_is_replaced(tmp_path: Path) -> None:
    a, b = AuditLog.for_home(tmp_path), AuditLog.for_home(tmp_path)
    assert a is b  # the node's scoring party, service and pre-approval handler append to one chain
    a.append("score_request", {"i": 0})
    (tmp_path / "audit" / "scoring.log").rename(tmp_path / "old.log")
    c = AuditLog.for_home(tmp_path)
    assert c is not a  # the file was moved away: a fresh log starts a fresh chain at the path
    c.append("score_request", {"i": 1})
    res = verify(tmp_path / "audit" / "scoring.log")
    assert res.ok and res.records == 1
    a.close()
    assert AuditLog.for_home(tmp_path) is c


def test_records_appended_together_chain_in_order_between_other_writers(tmp_path: Path) -> None:
    p = tmp_path / "scoring.log"
    a, b = AuditLog(p), AuditLog(p)
    a.append("score_request", {"i": 0})
    recs = b.append_many("score_contribution", [{"part": k} for k in range(3)])  # a grouped task's parts
    a.append("score_request", {"i": 4})
    assert [r["seq"] for r in recs] == [2, 3, 4] and recs[1]["prev"] == recs[0]["hash"]
    res = verify(p)
    assert res.ok and res.records == 5
    assert [json.loads(x).get("part") for x in p.read_text().splitlines()] == [None, 0, 1, 2, None]
    assert b.append_many("score_contribution", []) == [] and verify(p).records == 5
    with pytest.raises(InvalidInput, match="reserved"):  # nothing of a batch is written if one is bad
        b.append_many("x", [{"ok": 1}, {"seq": 9}])
    assert verify(p).records == 5
