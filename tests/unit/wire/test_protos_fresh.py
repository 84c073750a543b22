"""The committed generated code must equal what protoc makes from the .proto sources now."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_generated_code_is_fresh(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "protos",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos/fedcredit/v1").glob("*.proto")),
        ],
        cwd=ROOT,
        check=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    committed = sorted(p.relative_to(ROOT / "protos") for p in (ROOT / "protos").rglob("*_pb2*.py*"))
    assert generated == committed, "run scripts/gen_protos.sh and commit the result"
    stale = [str(p) for p in generated if (tmp_path / p).read_bytes() != (ROOT / "protos" / p).read_bytes()]
    assert not stale, f"stale generated code (run scripts/gen_protos.sh): {stale}"
