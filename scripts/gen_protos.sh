#!/usr/bin/env bash
# Regenerate the committed protobuf/gRPC Python code from protos/fedcredit/v1/*.proto.
# tests/unit/wire/test_protos_fresh.py runs the same generation into a temp dir and diffs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-protos}
"$PY" -m grpc_tools.protoc -I protos --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  protos/fedcredit/v1/*.proto
