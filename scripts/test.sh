#!/usr/bin/env bash
# Install tunestack with its test extras and run the whole test suite (slow end-to-end tests included).
#   bash scripts/test.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh test
"$PY" -m pytest -q "$@"
