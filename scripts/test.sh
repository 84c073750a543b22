#!/usr/bin/env bash
# Quick start, command 2: set up (with dev tools) and run the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" for the quick subset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec .venv/bin/python -m pytest -q "$@"
