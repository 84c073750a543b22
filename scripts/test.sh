#!/usr/bin/env bash
# Quick start, command 2: set up (with dev tools) and run the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" for the quick subset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
# The dashboard's browser test drives Debian's Chromium (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the dashboard browser test will try again" >&2
  fi
fi
# The other-language generation test uses Debian's protoc and Go plugins.
if ! command -v protoc >/dev/null 2>&1 || ! command -v protoc-gen-go >/dev/null 2>&1 \
    || ! command -v protoc-gen-go-grpc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler protoc-gen-go \
      protoc-gen-go-grpc >/dev/null) || echo "warning: could not install protoc; the proto generation test will fail" >&2
  fi
fi
# The Node.js client test scores through a party's local gRPC API with @grpc/grpc-js (from npm).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) \
      || echo "warning: could not install nodejs/npm; the Node.js client test will fail" >&2
  fi
fi
if [ ! -d tests/node/node_modules/@grpc/grpc-js ] && command -v npm >/dev/null 2>&1; then
  (cd tests/node && npm install --no-audit --no-fund --silent) \
    || echo "warning: npm install failed; the Node.js client test will fail" >&2
fi
# The PostgreSQL tests start a throw-away server from Debian's postgresql (initdb, postgres).
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || echo "warning: could not install postgresql; the PostgreSQL tests will fail naming it" >&2
  fi
fi
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
# Four workers on two cores, each test file whole on one worker (its module fixtures, federations and
# servers stay together): the process tests spend most of their time waiting on other processes
# (756 tests: 10 min 39 s with three workers, 14 min 28 s with two; 782 tests: 13 min 58 s; 790 tests on a
# slower day: 15 min 19 s with three, 15 min 4 s with four). Files go out in collection order
# (--no-loadscope-reorder; xdist would sort them by test count): tests/conftest.py puts the longest
# first, so that no long file starts last.
exec .venv/bin/python -m pytest -q -n 4 --dist loadfile --no-loadscope-reorder "$@"
