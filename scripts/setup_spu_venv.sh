#!/usr/bin/env bash
# A separate venv with SecretFlow's spu, for comparison runs only (spu needs numpy<2, protobuf 6.30).
# Usage: scripts/setup_spu_venv.sh [DIR]   (default .venv-spu); then pass --spu-python DIR/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.venv-spu}
[ -x "$DIR/bin/python" ] || python3 -m venv "$DIR"
"$DIR/bin/python" -m pip install -q spu
echo "$DIR/bin/python"
