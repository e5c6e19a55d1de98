#!/usr/bin/env bash
# Train the world motion modules on a lent GPU at the CPU recipe's settings (two step counts side by
# side) and score each on every held-out clip prompt. Not part of CI; the CPU recipe is the same
# command without the GPU: python -m spacetime.train configs/world_motion.yaml --out runs/world-motion
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
pip install -q --no-deps -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv
train() {  # name, time limit (s), extra --set flags
  local name=$1 limit=$2; shift 2
  timeout "$limit" python -m spacetime.train configs/world_motion.yaml --out "runs/$name" --quiet \
    --set threads=6 "$@" >"$OUT/$name.train.txt" 2>&1
  echo "$name exit $?"
}
train g-motion-a 360 --set steps=1500 &
train g-motion-b 360 --set steps=3000 &
sleep 60; tail -n1 runs/g-motion-*/log.jsonl
wait
for name in g-motion-a g-motion-b; do
  tail -n2 "runs/$name/log.jsonl"
  [ -d "runs/$name/model/motion" ] || continue
  python - "$name" <<'PY' | tee "$OUT/$name.eval.json"
import json, sys
from spacetime.eval.text_to_video import evaluate_clips
from spacetime.pipelines.video import VideoPipeline
name = sys.argv[1]
pipe = VideoPipeline.from_pretrained("spacetime/assets/default-image", "cuda", "fp32", f"runs/{name}/model/motion")
for g in (3.0, 5.0, 7.5):
    m, _ = evaluate_clips(pipe, guidance=g)
    print(json.dumps({"run": name, "guidance": g, **m}))
PY
  tar czf "$OUT/$name.tgz" "runs/$name/model" "runs/$name/log.jsonl" "runs/$name/config.json" "runs/$name/export.json"
done
