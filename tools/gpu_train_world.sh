#!/usr/bin/env bash
# Train the world video models side by side on one lent GPU (motion modules, temporal decoder,
# multi-view model), each capped by max_minutes, then score each and pack the exports into $OUT.
# The recipes are the configs/ files; overrides here only scale batch/steps to the GPU, and each
# run's config.json records exactly what ran. Not part of CI.
#   MOTION="--set steps=6000 --set batch_size=16" VVAE="..." MV="..." MINUTES=6 bash tools/gpu_train_world.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
MINUTES=${MINUTES:-6}
export DEVICE=${DEVICE:-cuda} EVAL_LIMIT=${EVAL_LIMIT:-0}  # DEVICE=cpu EVAL_LIMIT=2: a smoke run
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
pip install -q --no-deps -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
run() {  # name config extra-args...
  local name=$1 config=$2; shift 2
  python -m spacetime.train "$config" --out "runs/$name" --quiet --set threads=4 \
    --set max_minutes="$MINUTES" "$@" >"$OUT/$name.txt" 2>&1
  echo "$name exit $? at $(tail -n1 "runs/$name/log.jsonl")"
}
run g-motion configs/world_motion.yaml ${MOTION:-} &
run g-vvae configs/world_video_vae.yaml ${VVAE:-} &
run g-mv configs/world_multiview.yaml ${MV:-} &
wait
python - <<'PY' 2>&1 | tee "$OUT/eval.txt"
import json, os
from pathlib import Path
from spacetime.eval.text_to_video import evaluate_clips
from spacetime.pipelines.video import VideoPipeline
if Path("runs/g-motion/model/motion").is_dir():
    pipe = VideoPipeline.from_pretrained(
        "spacetime/assets/default-image", os.environ["DEVICE"], "fp32", "runs/g-motion/model/motion")
    limit = int(os.environ["EVAL_LIMIT"]) or None
    for g in (5.0, 7.5):
        print(json.dumps({"motion": g, **evaluate_clips(pipe, guidance=g, limit=limit)[0]}))
for run in ("g-vvae", "g-mv"):
    p = Path(f"runs/{run}/export.json")
    print(run, p.read_text() if p.exists() else "no export")
PY
python -m spacetime.eval.multiview runs/g-mv/model --device "$DEVICE" 2>&1 | tee -a "$OUT/eval.txt"
# fp16 copies: what ships, and under the 16 MB a file that comes back from a device may have
python -c "import sys; sys.path.insert(0, 'tools'); from pathlib import Path; from ship_default_image import to_fp16; [to_fp16(p) for p in map(Path, sys.argv[1:]) if p.is_dir()]" runs/g-motion/model runs/g-vvae/model runs/g-mv/model
for name in g-motion g-vvae g-mv; do
  tar czf "$OUT/$name.tgz" "runs/$name/model" runs/$name/*.json runs/$name/log.jsonl 2>/dev/null
done
ls -la "$OUT"
