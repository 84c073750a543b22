"""``fedcredit party snapshot``: loads keep history, an older date exits 1 naming both dates and leaves
the store as it was, a bad value names its row and column; change features per subject."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from party_node.cli import app
from party_node.home import init_home


def test_snapshot_cli(tmp_path):
    home = tmp_path / "p"
    init_home(home, "platform")
    run = CliRunner()
    ids = ["13800000001", "13800000002"]
    for week, spend in enumerate([[100, 100]] * 13 + [[100, 10]] * 5):
        f = tmp_path / f"w{week}.csv"
        f.write_text("id,spend\n" + "".join(f"{i},{s}\n" for i, s in zip(ids, spend, strict=True)))
        day = f"2024-{1 + week * 7 // 28:02d}-{1 + (week * 7) % 28:02d}"
        r = run.invoke(app, ["snapshot", "load", str(f), "--dataset", "behaviour", "--as-of", day, "--home", str(home)])
        assert r.exit_code == 0, r.output
    dates = run.invoke(app, ["snapshot", "dates", "--dataset", "behaviour", "--home", str(home)]).output.split()
    assert len(dates) == 18
    old = run.invoke(app, ["snapshot", "load", str(tmp_path / "w0.csv"), "--dataset", "behaviour", "--as-of",
                           "2024-01-02", "--home", str(home)])
    assert old.exit_code == 1 and "older than the latest loaded" in old.output
    assert run.invoke(app, ["snapshot", "dates", "--dataset", "behaviour", "--home", str(home)]).output.split() == dates
    bad = tmp_path / "bad.csv"
    bad.write_text("id,spend\n13800000001,12\n13800000002,lots\n")
    r = run.invoke(app, ["snapshot", "load", str(bad), "--dataset", "behaviour", "--as-of", "2025-01-01",
                         "--home", str(home)])
    assert r.exit_code == 1 and "row 3, column 'spend'" in r.output
    out = run.invoke(app, ["snapshot", "changes", "--dataset", "behaviour", "--feature", "spend", "--as-of", dates[-1],
                           "--home", str(home)])
    rows = {d["id"]: d["change"] for d in map(json.loads, out.output.splitlines())}
    assert rows["13800000001"] == 1.0 and rows["13800000002"] < 0.2
    # derive: an ordinary dataset; these ids were never ingested, so no row and no new subject
    d = run.invoke(app, ["snapshot", "derive", "--dataset", "behaviour", "--feature", "spend", "--as-of", dates[-1],
                         "--into", "behaviour_changes", "--home", str(home)])
    assert d.exit_code == 0 and "0 rows" in d.output and "2 snapshot ids not in the store" in d.output, d.output
    bad_date = run.invoke(app, ["snapshot", "derive", "--dataset", "behaviour", "--feature", "spend", "--as-of",
                                "2020-01-01", "--into", "behaviour_changes", "--home", str(home)])
    assert bad_date.exit_code == 1 and "--as-of: no snapshot of 'behaviour'" in bad_date.output
