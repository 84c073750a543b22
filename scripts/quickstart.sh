#!/usr/bin/env bash
# Quick start, command 1: set everything up and run a whole local federation on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec .venv/bin/python scripts/demo.py "$@"
