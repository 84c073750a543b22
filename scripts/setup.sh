#!/usr/bin/env bash
# Create .venv if needed and install fedcredit into it (editable), torch pinned first to the CPU build.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh dev   (EXTRAS is a comma list: dev,bench)
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or the extras changed.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${1:-}
VENV=${FEDCREDIT_VENV:-.venv}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3; do command -v "$c" >/dev/null 2>&1 && { PY=$c; break; }; done
fi
[ -n "$PY" ] || { echo "error: Python 3.11 is required (python3.11 not found)" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "error: Python 3.11 is required, $PY is $("$PY" --version 2>&1)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) extras=[$EXTRAS]"
stamp="$VENV/.fedcredit-setup"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  # torch first, pinned: any other torch request pulls several GB of CUDA packages.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  echo "$want" > "$stamp"
fi
# Tree scoring's compiled kernels into numba's on-disk cache (a few seconds), so no scoring request compiles.
"$VENV/bin/python" -c "from fedcore.protocol.scoring.tree_kernels import warm; warm()"
