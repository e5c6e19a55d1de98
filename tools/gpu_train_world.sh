#!/usr/bin/env bash
# Train world video models side by side on one lent GPU, each capped by max_minutes, then score
# each and pack the fp16 exports into $OUT. RUNS holds one run per line, `name config [--set k=v]…`:
# the recipes are the configs/ files, overrides only scale batch/steps to the GPU or pick a variant,
# and each run's config.json records exactly what ran. Not part of CI.
#   MINUTES=6 RUNS="g-motion configs/world_motion.yaml --set batch_size=32" bash tools/gpu_train_world.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
MINUTES=${MINUTES:-6}
RUNS=${RUNS:-"g-motion configs/world_motion.yaml
g-vvae configs/world_video_vae.yaml
g-mv configs/world_multiview.yaml"}
THREADS=${THREADS:-2}
export DEVICE=${DEVICE:-cuda} EVAL_LIMIT=${EVAL_LIMIT:-48}  # DEVICE=cpu EVAL_LIMIT=1: a smoke run
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
pip install -q --no-deps -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
names=()
while read -r name config args; do
  [ -z "$name" ] && continue
  names+=("$name")
  # shellcheck disable=SC2086
  (python -m spacetime.train "$config" --out "runs/$name" --quiet --set threads="$THREADS" \
    --set max_minutes="$MINUTES" $args >"$OUT/$name.txt" 2>&1
   echo "$name exit $? at $(tail -n1 "runs/$name/log.jsonl")") &
done <<<"$RUNS"
wait
score() {  # name: motion runs → held-out direction/constancy, multi-view runs → oracle readings
  local run=runs/$1
  if [ -d "$run/model/motion" ]; then
    python tools/score_motion.py "$run" --device "$DEVICE" --limit "$EVAL_LIMIT"
  elif [ -f "$run/model/unet/config.json" ]; then
    python -m spacetime.eval.multiview "$run/model" --device "$DEVICE"
  fi
  [ -f "$run/export.json" ] && echo "$1 export: $(cat "$run/export.json")"
}
for name in "${names[@]}"; do score "$name" >"$OUT/eval-$name.txt" 2>&1 & done
wait
cat "$OUT"/eval-*.txt | grep -v Warning
# fp16 copies: what ships, and under the 16 MB a file that comes back from a device may have
for name in "${names[@]}"; do
  python tools/to_fp16.py "runs/$name/model"
  tar czf "$OUT/$name.tgz" "runs/$name/model" runs/$name/*.json runs/$name/log.jsonl 2>/dev/null
done
ls -la "$OUT"
