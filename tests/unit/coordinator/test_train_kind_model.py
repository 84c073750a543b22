"""A wrong model/kind combination is an error, not silently ignored: at the CLI and at the job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedcore.errors import InvalidInput


def test_cli_refuses_vertical_with_mlp(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fedcore.cli", "coordinator", "train", "--kind", "vertical", "--model", "mlp",
         "--parties", "yixin,tiange", "--home", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "--model 'mlp' is not available with --kind 'vertical'" in proc.stderr and "Traceback" not in proc.stderr


def test_vertical_job_refuses_a_model_it_does_not_train() -> None:
    from coordinator.jobs.vertical import vertical_job

    rc = SimpleNamespace(params={"parties": ["a", "b"], "model": "mlp"})
    with pytest.raises(InvalidInput, match="model 'mlp' is not available with kind 'vertical'"):
        vertical_job(rc)  # type: ignore[arg-type]
