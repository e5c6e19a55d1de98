#!/usr/bin/env bash
# Retrain the embedded default image model from scratch (CPU; see the model card for times).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m spacetime.train configs/world_vae.yaml --out runs/world-vae "$@"
python -m spacetime.train configs/world_text2image.yaml --out runs/world-t2i --set vae=runs/world-vae/model "$@"
python tools/ship_default_image.py --vae-run runs/world-vae --t2i-run runs/world-t2i
