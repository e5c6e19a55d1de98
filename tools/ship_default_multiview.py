"""Evaluate the trained multi-view model and ship it as the package's default multi-view model.

    python -m spacetime.train configs/world_multiview.yaml --out runs/world-multiview
    python tools/ship_default_multiview.py --run runs/world-multiview
    python tools/bench_mesh.py   # prompt → mesh table, added to the model card

Writes spacetime/assets/default-multiview/ (diffusers layout with the inflation recorded in
unet/config.json, fp16, MODEL_CARD.md, metrics.json): the 3D oracle's readings of generated 4-view
sets, held-out and trained colour × solid pairs, and docs/images/multiview_sets.png.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from _shared import ROOT, publish, run_facts, ship_parser, stage

DEST = ROOT / "spacetime" / "assets" / "default-multiview"
SETS = ROOT / "docs" / "images" / "multiview_sets.png"
SET_PROMPTS = ["a red cube", "a blue cube", "a green torus", "a yellow cone", "a purple cylinder"]


def main() -> None:
    p = ship_parser(__doc__, "runs/world-multiview")
    p.add_argument("--heldout-sets", type=int, default=8, help="sets per held-out prompt")
    p.add_argument("--train-sets", type=int, default=2, help="sets per trained prompt")
    p.add_argument(
        "--history", default="", help="how the run was made when not in one go, for the card"
    )
    args = p.parse_args()

    from spacetime.eval.multiview import evaluate_splits
    from spacetime.pipelines.multiview import MultiViewPipeline

    staging = stage(args.run / "model", DEST)
    pipe = MultiViewPipeline.from_pretrained(staging, "cpu", precision="fp32")
    metrics = evaluate_splits(pipe, args.heldout_sets, args.train_sets)
    # One row per prompt, its four views side by side (0°, 90°, 180°, 270°).
    rows = [pipe(q, seed=0, steps=20, scheduler="dpm++")[0] for q in SET_PROMPTS]
    SETS.parent.mkdir(parents=True, exist_ok=True)
    sheet = np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)
    Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(
        SETS
    )

    export = json.loads((args.run / "export.json").read_text())
    card = {
        "metrics": metrics,
        "parameters": {k: v for k, v in export.items() if k.endswith("parameters")},
        "history": args.history,
        **run_facts(args.run, staging, args.machine),
    }
    publish(staging, DEST, card, model_card(card))
    print(json.dumps(metrics, indent=2))


def model_card(c: dict) -> str:
    cfg, m = c["config"], c["metrics"]
    names = {
        "all": "set reads right colour and solid",
        "colour": "set colour",
        "shape": "set solid",
        "view_all": "single view right colour and solid",
        "consistent": "all four views agree",
    }
    table = "\n".join(
        f"| {label} | {m['heldout'][k]:.0%} | {m['train'][k]:.0%} |" for k, label in names.items()
    )
    params = c["parameters"]
    return f"""# spacetime default multi-view model (the procedural world)

MVDream's recipe (Shi et al. 2023) on the default image model: the U-Net inflated with camera
conditioning (camera-to-world 4×4 → MLP → added to each view's timestep embedding) and cross-view
self-attention beside each spatial attention (all four views' tokens attend jointly), both zero at
initialisation, then trained whole with its text encoder on 4-view sets of the world's primitives
(sphere, cube, cylinder, cone, torus in the world's colours, rendered with simple shading).
{params.get("unet_parameters", 0):,} U-Net parameters, of which {params.get("multiview_parameters", 0):,}
are the added camera and cross-view layers. fp16 safetensors, {c["shipped_megabytes"]} MB. The
inflation is recorded in `unet/config.json` (`spacetime_inflation`); spacetime loads it as any
diffusers folder. `python -m spacetime.mesh` uses it for score distillation.

## Training

    python -m spacetime.train configs/world_multiview.yaml --out runs/world-multiview
    python tools/ship_default_multiview.py --run runs/world-multiview

Seed {cfg["seed"]}; {cfg["steps"]} steps × {cfg["batch_size"]} sets of {cfg["views"]} views 90° apart
in azimuth (azimuth grid {cfg["azimuth_step"]}°, elevation 0–{cfg["max_elevation"]}°, distance 3),
lr {cfg["lr"]} (warm-up, cosine), caption dropout {cfg["caption_dropout"]}. Data: the held-out
colour × solid pairs (orange sphere, blue cube, white cone, yellow torus) are never rendered.
Wall time: {c["train_wall_seconds"] / 60:.1f} min on {c["machine"]}. {c["history"]}

## Metrics ({c["date"]})

Generated 4-view sets (20 DPM-Solver++ steps, guidance {m["heldout"]["guidance"]}, the shipped fp16
weights) read by the 3D oracle (`spacetime/eval/oracle3d.py`: the best-matching colour × solid
rendered at each view's camera). Held out: {m["heldout"]["prompts"]} prompts × {m["heldout"]["sets"] // m["heldout"]["prompts"]} sets;
trained: {m["train"]["prompts"]} prompts × {m["train"]["sets"] // m["train"]["prompts"]} sets.

| reading | held out | trained |
|---|---|---|
{table}

![four views of five prompts](../../../docs/images/multiview_sets.png)
"""


if __name__ == "__main__":
    main()
