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
python tools/score_text2image.py runs/g-t2i/model --device cuda
tar czf "$OUT/models.tgz" runs/g-vae/model runs/g-t2i/model runs/g-vae/log.jsonl runs/g-t2i/log.jsonl
