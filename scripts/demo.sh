#!/usr/bin/env bash
# The main job on the embedded default: teach smollm2-135m-instruct a new name and author, then chat with it.
#   bash scripts/demo.sh [NAME] [AUTHOR] [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
NAME=${1:-Nova}
AUTHOR=${2:-Acme Labs}
OUT=${3:-runs/demo}

bash scripts/setup.sh
# The plain command: the built-in data set brings its recommended settings (configs/self-cognition.yaml spells them).
"$PY" -m tunestack sft --dataset self-cognition \
  --model_name "$NAME" --model_author "$AUTHOR" --output_dir "$OUT" --overwrite_output_dir
for question in "What is your name?" "Who made you?"; do
  echo "Q: $question"
  echo "A: $("$PY" -m tunestack infer --model "$OUT" --prompt "$question" --max_new_tokens 64)"
done
if [ -t 0 ] && [ -t 1 ]; then
  "$PY" -m tunestack infer --model "$OUT"
fi
