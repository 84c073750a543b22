"""Bad inputs at the CLI: one clear line on stderr, non-zero exit, no state changed."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_homes


def fedcredit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "fedcore.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def snapshot(root: Path) -> dict[str, str]:
    """Content of every file under root; SQLite databases by their logical dump."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.endswith(("-wal", "-shm")):
            continue
        if p.suffix == ".db":
            with sqlite3.connect(p) as db:
                out[str(p)] = hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
        else:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    return make_homes(tmp_path_factory.mktemp("cli"), {"yixin": "lender"})


def test_malformed_config_file(homes, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "coordinator.toml").write_text('[coordinator]\nlisten = "nowhere"\n')
    line = one_line_error(fedcredit("coordinator", "parties", "--offline", "--home", str(bad)))
    assert "coordinator.listen" in line and "coordinator.toml" in line
    (bad / "party.toml").write_text("[party\nname=")
    line = one_line_error(fedcredit("party", "status", "--home", str(bad)))
    assert "party.toml" in line and "not valid TOML" in line


def test_missing_paths(homes, tmp_path):
    before = snapshot(homes.root)
    line = one_line_error(
        fedcredit(
            "coordinator",
            "admit",
            str(tmp_path / "nope.csr"),
            "--role",
            "lender",
            "--home",
            str(homes.coordinator),
            "--out",
            str(homes.root / "kits"),
        )
    )
    assert "nope.csr does not exist" in line
    line = one_line_error(fedcredit("party", "serve", "--home", str(tmp_path / "no-such-home")))
    assert "party.toml does not exist" in line
    line = one_line_error(
        fedcredit("party", "install-kit", str(tmp_path / "no-kit"), "--home", str(homes.parties["yixin"]))
    )
    assert "no-kit" in line
    assert snapshot(homes.root) == before


def test_csr_whose_name_is_already_admitted(homes, tmp_path):
    # A second node that also calls itself yixin makes its own key and CSR.
    assert fedcredit("party", "init", "--name", "yixin", "--home", str(tmp_path / "impostor")).returncode == 0
    before = snapshot(homes.root)
    line = one_line_error(
        fedcredit(
            "coordinator",
            "admit",
            str(tmp_path / "impostor" / "party.csr"),
            "--role",
            "lender",
            "--home",
            str(homes.coordinator),
            "--out",
            str(homes.root / "kits2"),
        )
    )
    assert "'yixin' is already admitted" in line
    assert snapshot(homes.root) == before
    assert not (homes.root / "kits2").exists()


def test_bad_role_and_double_init(homes, tmp_path):
    assert fedcredit("party", "init", "--name", "cango", "--home", str(tmp_path / "cango")).returncode == 0
    before = snapshot(homes.root)
    line = one_line_error(
        fedcredit(
            "coordinator",
            "admit",
            str(tmp_path / "cango" / "party.csr"),
            "--role",
            "bank",
            "--home",
            str(homes.coordinator),
        )
    )
    assert "--role" in line and "bank" in line
    assert snapshot(homes.root) == before
    line = one_line_error(fedcredit("party", "init", "--name", "cango", "--home", str(tmp_path / "cango")))
    assert "already holds a party node" in line
    line = one_line_error(fedcredit("party", "init", "--name", "Not Valid", "--home", str(tmp_path / "x")))
    assert "not valid" in line
    assert not (tmp_path / "x").exists()


def test_revoke_unknown_party(homes):
    before = snapshot(homes.root)
    line = one_line_error(fedcredit("coordinator", "revoke", "ghost", "--home", str(homes.coordinator)))
    assert "ghost" in line
    assert snapshot(homes.root) == before


def test_help_everywhere():
    for args in ([], ["coordinator"], ["party"], ["coordinator", "admit"], ["party", "init"]):
        out = fedcredit(*args, "--help")
        assert out.returncode == 0 and "Usage" in out.stdout
