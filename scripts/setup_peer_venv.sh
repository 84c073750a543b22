#!/usr/bin/env bash
# A separate venv for one peer library the benchmarks compare against, never the product's venv:
#   openmined  openmined-psi (pins protobuf 6.30; the product's generated code needs 6.31+)
#   spu        SecretFlow spu (pins numpy<2 and protobuf 6.30)
# Usage: scripts/setup_peer_venv.sh openmined|spu [DIR]   (default .venv-NAME); prints DIR/bin/python,
# which the benchmarks find by default (or pass --openmined-python / --spu-python).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: scripts/setup_peer_venv.sh openmined|spu [DIR]}
case "$NAME" in
  openmined) PKG=openmined-psi ;;
  spu) PKG=spu ;;
  *) echo "error: unknown peer library $NAME (openmined or spu)" >&2; exit 2 ;;
esac
DIR=${2:-.venv-$NAME}
[ -x "$DIR/bin/python" ] || python3 -m venv "$DIR"
"$DIR/bin/python" -m pip install -q "$PKG"
echo "$DIR/bin/python"
