#!/usr/bin/env bash
# Install tunestack with its test extras and run the whole test suite (slow end-to-end tests included).
#   bash scripts/test.sh [PYTEST ARGS]
# The suite runs in TEST_WORKERS processes (default: one per core, at most 2), one torch thread each; the tests
# marked `serial` (they measure time or memory) run afterwards, alone. TEST_WORKERS=0 runs everything in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh test
cores=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))")
workers=${TEST_WORKERS:-$(( cores < 2 ? 1 : 2 ))}

# pytest exits 5 when a selection (-k, a path) leaves a part with no test: that part passed. A part that fails
# does not stop the other; the script exits with the first failure's status.
failed=0
part() {
  local status=0
  "$PY" -m pytest -q "$@" || status=$?
  if [[ $status != 0 && $status != 5 && $failed == 0 ]]; then failed=$status; fi
}

if (( workers > 1 )); then
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} part -n "$workers" --dist loadfile -m "not serial" "$@"
  part -m serial "$@"
else
  part "$@"
fi
exit $failed
