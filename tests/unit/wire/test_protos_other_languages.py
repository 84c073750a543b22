"""The .proto files generate clients in other languages with Debian's protoc: Go (with its gRPC
plugin) into the declared go_package, Java one class per message under org.fedcredit.v1 with
consistent *Proto outer classes. scripts/test.sh installs protobuf-compiler and the Go plugins."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROTOS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos/fedcredit/v1").glob("*.proto"))


def protoc(*args: str) -> None:
    exe = shutil.which("protoc")
    assert exe, "protoc is missing: apt-get install protobuf-compiler protoc-gen-go protoc-gen-go-grpc"
    out = subprocess.run([exe, "-I", "protos", *args, *PROTOS], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_go_generation(tmp_path):
    protoc(f"--go_out={tmp_path}", f"--go-grpc_out={tmp_path}")
    pkg = tmp_path / "github.com/fedcredit/fedcredit/gen/go/fedcredit/v1"
    names = sorted(p.name for p in pkg.iterdir())
    protos = ("admin", "link", "preapproval", "scoring")
    assert names == sorted(f"{n}{s}" for n in protos for s in (".pb.go", "_grpc.pb.go"))
    for p in pkg.iterdir():
        assert "\npackage fedcreditv1\n" in p.read_text()
    assert "func NewScoringClient(" in (pkg / "scoring_grpc.pb.go").read_text()


def test_java_generation(tmp_path):
    protoc(f"--java_out={tmp_path}")
    pkg = tmp_path / "org/fedcredit/v1"
    names = {p.stem for p in pkg.iterdir()}
    assert {"AdminProto", "LinkProto", "ScoringProto"} <= names
    assert not {"Admin", "Link", "ScoringOuterClass", "AdminOuterClass"} & names
    for message in ("JointScoreRequest", "PartyMessage", "StartRunRequest"):
        text = (pkg / f"{message}.java").read_text()
        assert "package org.fedcredit.v1;" in text and f"public final class {message}" in text


def test_csharp_namespace(tmp_path):
    protoc(f"--csharp_out={tmp_path}")
    assert "namespace Fedcredit.V1 {" in (tmp_path / "Scoring.cs").read_text()
