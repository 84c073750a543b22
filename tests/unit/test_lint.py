"""The code base stays ruff- and mypy-clean (configuration in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_clean():
    # no arguments: the files come from pyproject.toml, so the documented bare `mypy` works
    out = subprocess.run([sys.executable, "-m", "mypy"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_import_is_light():
    """`fedcredit --help` builds the whole command tree without loading the data or ML stacks."""
    code = (
        "import sys, fedcore.cli as c; c.build_app(); "
        "print(','.join(m for m in ('pandas', 'pyarrow', 'sqlalchemy', 'torch', 'tenseal', 'flwr', 'grpc')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the CLI loaded {out.stdout.strip()}"


def test_peer_libraries_stay_out_of_the_product_env():
    """openmined-psi and spu pin protobuf 6.30 (the generated code needs 6.31+): no extra may pull them
    into the product's venv; the benchmarks run them from their own (scripts/setup_peer_venv.sh)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(d for ds in project.get("optional-dependencies", {}).values() for d in ds)]
    names = {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for d in wanted}
    assert not names & {"openmined-psi", "spu", "secretflow"}
    assert "openmined" in (ROOT / "scripts" / "setup_peer_venv.sh").read_text()
