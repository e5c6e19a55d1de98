"""Evaluate the trained world models and ship them as the package's default image model.

    python tools/ship_default_image.py --vae-run runs/world-vae --t2i-run runs/world-t2i

Writes spacetime/assets/default-image/ (diffusers layout, fp16 safetensors, MODEL_CARD.md,
metrics.json) and docs/images/default_image_grid.png. The whole recipe, from scratch:

    bash tools/train_default_image.sh
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _shared import ROOT, publish, size_mb, stage, wall_seconds

DEST = ROOT / "spacetime" / "assets" / "default-image"
GRID = ROOT / "docs" / "images" / "default_image_grid.png"
GRID_PROMPTS = [
    "a red circle", "a green square", "a blue triangle", "a yellow circle on a purple background",
    "an orange square on a white background", "a white triangle on a black background",
    "a cyan circle on a red background", "a purple square on a yellow background",
]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--vae-run", type=Path, default=Path("runs/world-vae"))
    p.add_argument("--t2i-run", type=Path, default=Path("runs/world-t2i"))
    p.add_argument("--guidance", type=float, default=5.0)
    args = p.parse_args()

    from spacetime.eval.text_to_image import evaluate, grid
    from spacetime.pipelines.image import load_pipeline
    from spacetime.train.vae import heldout_psnr

    staging = stage(args.t2i_run / "model", DEST)
    pipe = load_pipeline(staging, precision="fp32")  # exactly what ships (fp16-rounded)

    metrics, _ = evaluate(pipe, guidance=args.guidance, precision="fp32")
    vae_export = json.loads((args.vae_run / "export.json").read_text())
    vae_export["psnr_heldout_db"] = heldout_psnr(pipe.components.vae)  # the shipped fp16 weights
    images = np.concatenate(
        [pipe(q, seed=0, steps=20, scheduler="dpm++", guidance=args.guidance) for q in GRID_PROMPTS]
    )
    GRID.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(images, 4)).resize((4 * 128, 2 * 128), Image.NEAREST).save(GRID)

    # 64x64, 20 DPM-Solver++ steps, after load (median of 5, one warm-up).
    times = []
    for i in range(6):
        start = time.perf_counter()
        pipe("a red circle", steps=20, scheduler="dpm++", seed=i)
        times.append(time.perf_counter() - start)
    seconds_per_image = round(float(np.median(times[1:])), 3)

    vae_cfg = json.loads((args.vae_run / "config.json").read_text())
    t2i_cfg = json.loads((args.t2i_run / "config.json").read_text())
    card = {
        "heldout_text_to_image": metrics,
        "vae_psnr_heldout_db": vae_export["psnr_heldout_db"],
        "vae_scaling_factor": vae_export["scaling_factor"],
        "train_wall_seconds": {
            "vae": wall_seconds(args.vae_run),
            "text2image": wall_seconds(args.t2i_run),
        },
        "seconds_per_64px_image_20_dpm_steps": seconds_per_image,
        "shipped_megabytes": size_mb(staging),
        "parameters": {
            name: sum(v.numel() for v in getattr(pipe.components, name).state_dict().values())
            for name in ("unet", "vae", "text_encoder")
        },  # fmt: skip
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": date.today().isoformat(),
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "vae_config": vae_cfg,
        "text2image_config": t2i_cfg,
    }
    publish(staging, DEST, card, model_card(card))
    print(json.dumps({k: card[k] for k in list(card)[:7]}, indent=2))
    print(f"shipped to {DEST} ({card['shipped_megabytes']} MB), grid in {GRID}")


def model_card(c: dict) -> str:
    m = c["heldout_text_to_image"]
    w = c["train_wall_seconds"]
    return f"""# spacetime default image model (the procedural world)

A small Stable-Diffusion-family model trained by this project from scratch on the procedural world
(`spacetime/world`): 64×64 scenes of a circle, square or triangle in one of 8 colours, on a plain
background. It ships inside the package so `python -m spacetime.image "a red circle"` works
offline. Diffusers layout (weights stored fp16, loaded as fp32); diffusers can load it too.

| part | what | parameters |
|---|---|---|
| vae | AutoencoderKL, f = 8, 4 latent channels, scaling factor {c["vae_scaling_factor"]} | {c["parameters"]["vae"]:,} |
| unet | UNet2DConditionModel on 8×8 latents, ε-prediction, SD 1.x noise schedule | {c["parameters"]["unet"]:,} |
| text_encoder | CLIPTextModel, word-level vocabulary of the world (16 tokens) | {c["parameters"]["text_encoder"]:,} |

Shipped weights: {c["shipped_megabytes"]} MB.

## Training (one command, from scratch, CPU)

    bash tools/train_default_image.sh

which runs

    python -m spacetime.train configs/world_vae.yaml --out runs/world-vae
    python -m spacetime.train configs/world_text2image.yaml --out runs/world-t2i --set vae=runs/world-vae/model
    python tools/ship_default_image.py --vae-run runs/world-vae --t2i-run runs/world-t2i

- Data: procedural scenes drawn on the fly from (seed, step); the held-out colour×shape×background
  combinations (`spacetime.world.heldout_prompts()`, 20 of 216) are never drawn in training.
- Seed 0. VAE: {c["vae_config"]["steps"]} steps × batch {c["vae_config"]["batch_size"]}, AdamW lr {c["vae_config"]["lr"]},
  MSE + 0.5·L1 + {c["vae_config"]["kl_weight"]}·KL. U-Net and text encoder jointly: {c["text2image_config"]["steps"]} steps ×
  batch {c["text2image_config"]["batch_size"]}, lr {c["text2image_config"]["lr"]}, {c["text2image_config"]["caption_dropout"]:.0%} empty captions for guidance. EMA weights.
- Wall time on {c["machine"]}: VAE {w["vae"] / 60:.1f} min, text-to-image {w["text2image"] / 60:.1f} min.

## Metrics ({c["date"]}, git {c["git"]})

Held-out prompts ({m["prompts"]} combinations × {m["images"] // m["prompts"]} images, DPM-Solver++ {m["steps"]} steps,
guidance {m["guidance"]}), read by the world's oracle (`spacetime/eval/oracle.py`):

| colour | shape | background | all three |
|---|---|---|---|
| {m["colour"]:.1%} | {m["shape"]:.1%} | {m["background"]:.1%} | {m["all"]:.1%} |

- VAE reconstruction PSNR on held-out scenes: {c["vae_psnr_heldout_db"]} dB.
- One 64×64 image, 20 DPM-Solver++ steps, after load: {c["seconds_per_64px_image_20_dpm_steps"]} s.

## Limits

It knows only the world's words ({", ".join(sorted(set(__import__("spacetime.world", fromlist=["VOCABULARY"]).VOCABULARY)))});
other words print a warning and are spelled out letter by letter, which the model never saw.
"""


if __name__ == "__main__":
    main()
