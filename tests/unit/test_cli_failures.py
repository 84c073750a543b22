"""A failing case of every command of every group: non-zero exit and one ``error: ...`` line naming the
problem. The command tree is walked, so a new command without a case here fails the test."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer

from fedcore.cli import build_app, main
from tests.conftest import Homes, free_port, make_homes

SCHEMA = """
[dataset]
name = "apps"
id_column = "id"
id_kind = "opaque"

[numeric]
age = {}
"""


@dataclass
class World:
    homes: Homes
    down: Path  # a coordinator home whose server is not running
    root: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from coordinator.config import load_coordinator_config
    from coordinator.home import init_home
    from coordinator.server import CoordinatorServer

    root = tmp_path_factory.mktemp("clifail")
    homes = make_homes(root, {"yixin": "lender", "tiange": "platform"})
    down = root / "down"
    init_home(down, listen=f"127.0.0.1:{free_port()}")
    server = CoordinatorServer(load_coordinator_config(homes.coordinator), port=homes.port)
    server.start()
    (root / "apps.toml").write_text(SCHEMA)
    (root / "bad.csv").write_text("id,age\na1,30\na2,thirty\n")
    yield World(homes, down, root)
    server.stop(grace=0)


def commands() -> list[str]:
    out: list[str] = []

    def walk(c: click.Command, path: list[str]) -> None:
        if isinstance(c, click.Group) and c.commands:
            for name, sub in c.commands.items():
                walk(sub, [*path, name])
        else:
            out.append(" ".join(path))

    walk(typer.main.get_command(build_app()), [])
    return sorted(out)


def cases(w: World) -> dict[str, tuple[list[str], str]]:
    """command -> (arguments of a failing call, text the error line must contain)."""
    c, down = str(w.homes.coordinator), str(w.down)
    y = str(w.homes.parties["yixin"])
    gone = str(w.root / "no-such-home")
    broken_log = w.root / "broken.log"
    return {
        "coordinator init": (["coordinator", "init", "--home", c], "already"),
        "coordinator serve": (["coordinator", "serve", "--home", gone], "coordinator.toml does not exist"),
        "coordinator admit": (["coordinator", "admit", str(w.root / "x.csr"), "--role", "lender", "--home", c],
                              "x.csr does not exist"),
        "coordinator revoke": (["coordinator", "revoke", "ghost", "--home", c], "ghost"),
        "coordinator parties": (["coordinator", "parties", "--home", gone], "does not exist"),
        "coordinator probe": (["coordinator", "probe", "ghost", "--home", c, "--count", "1"], "ghost"),
        "coordinator audit": (["coordinator", "audit", "--home", gone], "does not exist"),
        "coordinator psi": (["coordinator", "psi", "--parties", "ghost,tiange", "--home", c], "ghost"),
        "coordinator runs": (["coordinator", "runs", "--home", down], "Connection refused"),
        "coordinator distribute-key": (["coordinator", "distribute-key", "--home", down], "Connection refused"),
        "coordinator train": (["coordinator", "train", "--parties", "yixin", "--kind", "diagonal", "--home", c],
                              "--kind must be horizontal or vertical"),
        "coordinator resume": (["coordinator", "resume", "no-such-run", "--home", c], "no-such-run"),
        "coordinator models": (["coordinator", "models", "--home", down], "Connection refused"),
        "coordinator report": (["coordinator", "report", "no-such-run", "--home", c, "--out", str(w.root / "r")],
                               "no-such-run"),
        "coordinator evaluate": (["coordinator", "evaluate", "no-such-run", "--home", c], "no-such-run"),
        "coordinator binning": (["coordinator", "binning", "--parties", "ghost,tiange", "--home", c],
                                "unknown parties: ghost"),
        "party binning show": (["party", "binning", "show", "--home", y], "no binning run"),
        "party evaluate": (["party", "evaluate", "no-such-model", "--file", str(w.root / "bad.csv"),
                            "--label-column", "age", "--home", y], "row 2, column 'age': label '30' must be 0 or 1"),
        "party scorecard": (["party", "scorecard", "no-such-model", "--home", y],
                            "model 'no-such-model' has no slice at this party"),
        "party importance": (["party", "importance", "no-such-model", "--home", y],
                             "model 'no-such-model': this party keeps no tree model of that id"),
        "party init": (["party", "init", "--name", "Not Valid", "--home", str(w.root / "x")], "not valid"),
        "party install-kit": (["party", "install-kit", str(w.root / "no-kit"), "--home", y], "no-kit"),
        "party serve": (["party", "serve", "--home", gone], "party.toml does not exist"),
        "party status": (["party", "status", "--home", y], "has not run yet"),
        "party ingest": (["party", "ingest", str(w.root / "bad.csv"), "--schema", str(w.root / "apps.toml"),
                          "--store", f"sqlite:///{w.root / 'ingest.db'}"],
                         "data row 2, column 'age': 'thirty' is not a number"),
        "party data summary": (["party", "data", "summary", "--store", f"sqlite:///{w.root / 'apps.toml'}"],
                               "apps.toml"),
        "party data whitelist": (["party", "data", "whitelist", "nope", "--store", f"sqlite:///{w.root / 'w.db'}"],
                                 "nope"),
        "party score": (["party", "score", "--home", y], "give either --id"),
        "party monitor register": (["party", "monitor", "register", "--home", gone], "party.toml does not exist"),
        "party monitor run": (["party", "monitor", "run", "--home", gone], "party.toml does not exist"),
        "party monitor alerts": (["party", "monitor", "alerts", "--kind", "nonsense", "--home", y], "nonsense"),
        "party snapshot load": (["party", "snapshot", "load", str(w.root / "nope.csv"), "--dataset", "b",
                                 "--as-of", "2024-01-01", "--home", y], "nope.csv does not exist"),
        "party snapshot dates": (["party", "snapshot", "dates", "--dataset", "b", "--home", gone],
                                 "party.toml does not exist"),
        "party snapshot changes": (["party", "snapshot", "changes", "--dataset", "b", "--feature", "spend",
                                    "--as-of", "someday", "--home", y], "not a date"),
        "party snapshot derive": (["party", "snapshot", "derive", "--dataset", "b", "--feature", "spend",
                                   "--as-of", "2024-01-01", "--into", "b_changes", "--home", y],
                                  "--dataset: no snapshots of 'b' are loaded"),
        "party audit verify": (["party", "audit", "verify", "--log", str(broken_log)], "BROKEN at line 2"),
    }


def broken_audit_log(path: Path) -> None:
    from party_node.audit import AuditLog

    log = AuditLog(path, fsync_interval_s=None)
    for i in range(3):
        log.append("score", {"n": i})
    log.close()
    lines = path.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["n"] = 99  # an edited record
    lines[1] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")


def run_cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    """``main(args)`` in this process. ``serve`` sets up logging before it fails: a root handler on the
    sys.stderr of that moment, capsys's stream, closed after the test; every later record of this pytest
    worker then printed "--- Logging error --- ... I/O operation on closed file". The root logger is put
    back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as ex:
            main(args)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return int(ex.value.code or 0), capsys.readouterr().err


def test_every_command_fails_loudly(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    table = cases(world)
    assert sorted(table) == commands(), "every command needs a failing case here"
    broken_audit_log(world.root / "broken.log")
    for name, (args, expected) in table.items():
        code, err = run_cli(capsys, args)
        lines = err.strip().splitlines()
        assert code != 0, f"{name}: exit 0 ({err!r})"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err!r}"
        assert expected in lines[0], f"{name}: {lines[0]!r} lacks {expected!r}"
        assert "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--kind", "vertical", "--encoding", "ordinal"], "--encoding must be onehot or woe, not 'ordinal'"),
        (["--kind", "horizontal", "--encoding", "woe"], "--encoding woe and --binning-run apply to --kind vertical"),
        (["--kind", "vertical", "--model", "gbdt", "--encoding", "woe"], "apply to --kind vertical --model logistic"),
        (["--kind", "vertical", "--binning-run", "b1"], "--binning-run and --min-iv need --encoding woe"),
        (["--kind", "vertical", "--min-iv", "0.02"], "--binning-run and --min-iv need --encoding woe"),
        (["--kind", "vertical", "--encoding", "woe"], "needs a binning run of these parties (yixin, tiange)"),
        (["--kind", "vertical", "--encoding", "woe", "--binning-run", "b1"], "'b1' is not a succeeded binning run"),
    ],
)
def test_train_encoding_options_fail_loudly(world: World, capsys: pytest.CaptureFixture[str], extra: list[str],
                                            needle: str) -> None:
    """``coordinator train --encoding/--binning-run``: a wrong value or combination, or no binning run to
    take the WOE from, is one error line naming it (before any PSI or training starts)."""
    code, err = run_cli(capsys, ["coordinator", "train", "--parties", "yixin,tiange", *extra,
                                 "--home", str(world.homes.coordinator)])
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]


def test_ctrl_c_exits_130_with_a_message(tmp_path: Path) -> None:
    """SIGINT while a command works: exit 130 and one line saying so, not silence with status 0."""
    (tmp_path / "apps.toml").write_text(SCHEMA)
    big = tmp_path / "big.csv"
    with big.open("w") as f:
        f.write("id,age\n")
        for i in range(500_000):
            f.write(f"a{i},{i % 90}\n")
    store = tmp_path / "store.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedcore.cli", "party", "ingest", str(big), "--schema", str(tmp_path / "apps.toml"),
         "--store", f"sqlite:///{store}", "--max-rejects", "-1"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    # the store exists once the command is running (it opens the store before reading the file)
    while not store.exists() and proc.poll() is None:
        os.sched_yield()
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 130, err
    assert lines == ["error: interrupted"], err
    from party_node.store import Store

    with Store.open(f"sqlite:///{store}") as st:  # atomic: the interrupted ingest left nothing
        assert not st.summary().tables


def test_batch_score_that_stops_leaves_no_results_file(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A party dies after the first chunk: exit 1 naming it, and --out keeps its old content (no partial
    file under the final name, no temporary file left behind)."""
    from types import SimpleNamespace

    import party_node.scoring as scoring
    from fedcore.errors import PartyUnavailable

    class Batch:
        def rows(self) -> list[dict[str, object]]:
            return [{"id": "a1", "status": "ok", "decision": "approve"}]

    class DyingService:
        trees = SimpleNamespace(lender_model=lambda _: None)  # no tree model: the joint-logistic slice's path
        settings = SimpleNamespace(model_id="joint")

        def model(self, _: object) -> SimpleNamespace:
            return SimpleNamespace(features=("age",))

        def score_table(self, table: object, **_: object) -> Iterator[Batch]:
            yield Batch()
            raise PartyUnavailable("tiange", "link closed")

    monkeypatch.setattr(scoring, "build_service", lambda config, store: DyingService())
    apps = world.root / "apps.csv"
    apps.write_text("id,age\na1,30\na2,40\n")
    out = world.root / "scores" / "out.jsonl"
    out.parent.mkdir()
    out.write_text("previous results\n")
    code, err = run_cli(capsys, ["party", "score", "--home", str(world.homes.parties["yixin"]), "--file", str(apps),
                                 "--out", str(out)])
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: ") and "tiange" in err
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl"]


def test_coordinator_refuses_a_missing_registry(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """state.db deleted or its path mistyped: serve refuses, names the file and the way to create one,
    and creates nothing (an empty registry would reject every party and the admin)."""
    import shutil

    home = world.root / "copy"
    shutil.copytree(world.down, home)
    state = home / "state.db"
    state.unlink()
    for args in (["coordinator", "serve", "--home", str(home)], ["coordinator", "parties", "--offline", "--home",
                                                                  str(home)]):
        code, err = run_cli(capsys, args)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"{state} does not exist" in err and "coordinator init" in err
        assert not state.exists()


@pytest.mark.parametrize(
    ("script", "args", "needle"),
    [
        ("scripts/synthesize.py", ["--out", "OUT", "--format", "xml"], "--format"),
        ("scripts/demo.py", ["--keep", "--root", "ROOT/bad.csv"], "bad.csv"),
    ],
)
def test_the_demo_scripts_fail_loudly(tmp_path: Path, script: str, args: list[str], needle: str) -> None:
    """The generator and the demo left the product CLI for scripts/: they still exit non-zero on bad input."""
    (tmp_path / "bad.csv").write_text("not a folder")
    argv = [a.replace("OUT", str(tmp_path / "s")).replace("ROOT", str(tmp_path)) for a in args]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / script), *argv], capture_output=True, text=True, cwd=root)
    assert proc.returncode != 0
    assert needle in proc.stderr


LIST_SCHEMA = """
[dataset]
name = "fraud_list"
id_column = "id"
id_kind = "opaque"
consent_all = ["blacklist"]

[flags]
fraud = "fraud"
"""


@pytest.mark.parametrize(
    ("schema", "csv", "needle"),
    [
        (SCHEMA, "id,age\na1,30\n", "--bulk loads a list (id, consent and flag columns); dataset 'apps' declares"),
        (LIST_SCHEMA, "id,fraud\na1,1\na2,maybe\n", "data row 2, column 'fraud': 'maybe' is not a yes/no value"),
        (LIST_SCHEMA, "id,fraud\na1,1\na2,1\na1,0\n", "data row 3, column 'id': duplicate id (same normalized id as "
                                                      "data row 1)"),
    ],
)
def test_bulk_ingest_fails_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str], schema: str, csv: str,
                                  needle: str) -> None:
    """``party ingest --bulk``: a schema that is not a list, a bad flag value or a repeated id is one error line
    naming file, data row and column, and the store keeps nothing of the load."""
    (tmp_path / "s.toml").write_text(schema)
    (tmp_path / "list.csv").write_text(csv)
    store = tmp_path / "store.db"
    code, err = run_cli(capsys, ["party", "ingest", str(tmp_path / "list.csv"), "--schema", str(tmp_path / "s.toml"),
                                 "--store", f"sqlite:///{store}", "--bulk"])
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    from party_node.store import Store

    with Store.open(f"sqlite:///{store}") as st:
        assert not st.summary().tables and len(st.fraud_ids()) == 0
