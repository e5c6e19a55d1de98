#!/usr/bin/env bash
# Exploration on a lent GPU: train the world VAE and text-to-image models at the CPU recipe's
# settings and score them, to check a recipe before spending CPU hours on it. Not part of CI.
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
pip install -q --no-deps -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
python -m spacetime.train configs/world_vae.yaml --out runs/g-vae --quiet "$@" 2>&1 | tail -2
cp runs/g-vae/export.json "$OUT/vae_export.json"; cat "$OUT/vae_export.json"
python -m spacetime.train configs/world_text2image.yaml --out runs/g-t2i --set vae=runs/g-vae/model --quiet ${T2I_ARGS:-} 2>&1 | tail -2
python - <<'PY'
import json, os
from spacetime.pipelines.image import load_pipeline
from spacetime.eval.text_to_image import evaluate
pipe = load_pipeline("runs/g-t2i/model", "cuda")
for g in (3.0, 7.5):
    m, _ = evaluate(pipe, guidance=g, precision="fp32")
    print(json.dumps(m))
PY
tar czf "$OUT/models.tgz" runs/g-vae/model runs/g-t2i/model runs/g-vae/log.jsonl runs/g-t2i/log.jsonl
