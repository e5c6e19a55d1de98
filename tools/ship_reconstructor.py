"""Evaluate the fast path's reconstructor and ship it in the package as the default.

    python tools/ship_reconstructor.py --run runs/world-reconstructor

Writes spacetime/assets/default-reconstructor/ (config.json, reconstructor.safetensors in fp16,
MODEL_CARD.md, metrics.json). Every colour x solid prompt of the world, training and held-out
pairs, gets --seeds multi-view sets from the shipped multi-view model (the fast path's settings:
20 DPM-Solver++ steps, guidance 5, the default cameras); the reconstructor reads each, and its
field is compared with the ground-truth primitive on a 64^3 lattice: volume IoU of the solids
and whether the albedo at the surface is the prompt's colour (nearest in the world's palette).
The mesh-level benchmark of the fast path (IoU, Chamfer, watertightness, the oracle's reading)
is tools/bench_mesh.py.
"""

from __future__ import annotations

import json

from _shared import ROOT, publish, run_facts, ship_parser, stage

DEST = ROOT / "spacetime" / "assets" / "default-reconstructor"


def evaluate(staging, seeds: int) -> dict:
    import numpy as np
    import torch

    from spacetime.formats.load import shipped
    from spacetime.pipelines.multiview import MultiViewPipeline
    from spacetime.threed.field import FieldConfig, lattice_points
    from spacetime.threed.reconstruct import FAST_GUIDANCE, FAST_STEPS, load_reconstructor
    from spacetime.world.palette import COLOURS, SOLIDS
    from spacetime.world.primitives import HELDOUT_PRIMITIVES, Primitive

    model = load_reconstructor(staging)
    pipe = MultiViewPipeline.from_pretrained(shipped("multiview"))
    points = lattice_points(64)
    names = list(COLOURS)
    palette = torch.tensor([COLOURS[c] for c in names], dtype=torch.float32) / 255
    rows = {"train": [], "heldout": []}
    for colour in COLOURS:
        for shape in SOLIDS:
            primitive = Primitive(shape, colour)
            truth = primitive.sdf(points) < 0
            sets = pipe(primitive.caption(), steps=FAST_STEPS, guidance=FAST_GUIDANCE,
                        scheduler="dpm++", seed=0, num_images=seeds)  # fmt: skip
            for views in sets:
                pixels = torch.from_numpy(views).float().permute(0, 3, 1, 2)[None] / 255
                field = model.field(pixels, FieldConfig(resolution=64))
                sdf, albedo = field.channels()
                solid = sdf < 0
                iou = float((solid & truth).sum() / (solid | truth).sum().clamp(min=1))
                surface = (sdf.abs() < 0.05) & solid
                rgb = torch.sigmoid(albedo[:, surface]).mean(1) if surface.any() else None
                read = None if rgb is None else names[int((palette - rgb).norm(dim=1).argmin())]
                split = "heldout" if (colour, shape) in HELDOUT_PRIMITIVES else "train"
                rows[split].append({"prompt": primitive.caption(), "iou": iou,
                                    "colour_right": read == colour})  # fmt: skip
    summary = {
        split: {
            "sets": len(r),
            "mean_iou": round(float(np.mean([x["iou"] for x in r])), 4),
            "colour_right": round(float(np.mean([x["colour_right"] for x in r])), 4),
        }
        for split, r in rows.items()
    }
    return {"summary": summary, "rows": rows}


def model_card(card: dict) -> str:
    s = card["summary"]
    cfg = card["config"]
    return f"""# spacetime default reconstructor (the fast path)

A feed-forward reconstructor in the manner of LRM / LGM (and the voxel decoders before them,
3D-R2N2, Pix2Vox): the four views the shipped multi-view model makes at its default cameras →
a shared 2D encoder → one fused code → a 3D decoder writing a truncated signed distance
({cfg["grid"]}^3, read trilinearly) and albedo logits (8^3) over [-1, 1]^3. The lattices become a
`Field`, so `python -m spacetime.mesh "a red cube" --fast` extracts its mesh the way score
distillation's is extracted, and score distillation starts from it (the CLI's default).
{card["parameters"]:,} parameters, fp16 safetensors, {card["shipped_megabytes"]:.2f} MB.

## Training

    python -m spacetime.train configs/world_reconstructor.yaml --out runs/world-reconstructor
    python tools/ship_reconstructor.py --run runs/world-reconstructor

Seed {cfg["seed"]}; {cfg["steps"]} steps × {cfg["batch_size"]} sets, lr {cfg["lr"]} (warm-up,
cosine), EMA {cfg["ema_decay"]}. Each batch: half the world's own renders of a primitive (views
90° apart, elevation 0-{cfg["max_elevation"]:g}°), half sets the shipped multi-view model made for
the training prompts ({cfg["generated_per_prompt"]} seeds per prompt, {card["generated_sets"]}
sets, made once and cached), so the reconstructor learns the model's rendering and its
disagreements between views. Targets are the world's ground truth: each primitive's signed
distance (truncated at ±0.2) and colour. Held-out colour × solid pairs (orange sphere, blue cube,
white cone, yellow torus) are in neither. Wall time: {card["train_wall_seconds"] / 60:.1f} min on
{card["machine"]}.

## Metrics ({card["date"]})

Multi-view sets of every colour × solid prompt ({card["seeds"]} seeds each; the fast path's
settings: 20 DPM-Solver++ steps, guidance 5) read by the reconstructor; its field against the
ground truth on a 64^3 lattice. `python tools/ship_reconstructor.py`.

| prompts | sets | mean volume IoU | colour right |
|---|---|---|---|
| training pairs | {s["train"]["sets"]} | {s["train"]["mean_iou"]:.3f} | {s["train"]["colour_right"]:.0%} |
| held-out pairs | {s["heldout"]["sets"]} | {s["heldout"]["mean_iou"]:.3f} | {s["heldout"]["colour_right"]:.0%} |

Meshes, with Chamfer distances, watertightness and the 3D oracle's reading, and the time from
prompt to file: docs/benchmarks.md, "Text to mesh" (`python tools/bench_mesh.py`).
"""


def main() -> None:
    p = ship_parser(__doc__, "runs/world-reconstructor")
    p.add_argument("--seeds", type=int, default=2, help="multi-view sets per prompt")
    p.add_argument("--dry-run", action="store_true", help="print the metrics, ship nothing")
    args = p.parse_args()

    staging = stage(args.run / "model", DEST)
    result = evaluate(staging, args.seeds)
    print(json.dumps(result["summary"]), flush=True)
    if args.dry_run:
        return
    export = json.loads((args.run / "export.json").read_text())
    card = {
        "summary": result["summary"],
        "seeds": args.seeds,
        "parameters": export["parameters"],
        "generated_sets": export["generated_sets"],
        "steps_done": export["steps_done"],
        **run_facts(args.run, staging, args.machine),
    }
    publish(staging, DEST, card, model_card(card))


if __name__ == "__main__":
    main()
