"""Evaluate the first-frame motion LoRA and ship it in the package as `first-frame`.

    python tools/ship_first_frame_lora.py --run runs/first-frame-lora

Writes spacetime/assets/lora/first-frame/ (pytorch_lora_weights.safetensors in fp16,
MODEL_CARD.md, metrics.json) and docs/images/first_frame_*.gif. Held-out clips of the world
(colour x shape x direction combinations never trained on) give a prompt and a first frame (the
clip's own first frame); the shipped world model samples each as `python -m spacetime.video PROMPT
--first-frame IMAGE` does (FreeInit, DDIM 20 steps, guidance 7.5), and the oracle reads whether
frame 0 shows the image (colour, shape, background, centre within 2 px), the direction, and
whether colour and shape hold: with the LoRA, with the image but without the LoRA, and with the
prompt alone, on the same seeds.
"""

from __future__ import annotations

import json
import math

from _shared import ROOT, publish, run_facts, ship_parser, stage

DEST = ROOT / "spacetime" / "assets" / "lora" / "first-frame"
POSITION = 2.0  # px: frame 0's centre counts as the image's within this
# px: frame 1 continues from the image when its object is this close to the image's (the world's
# objects move at most 2.5 px per frame, plus the position tolerance)
CONTINUES = 4.5


def evaluate(pipe, clips, first_frame: bool) -> dict:
    import numpy as np

    from spacetime.eval.oracle import read_clips

    out = np.concatenate([
        pipe(c.caption(), first_frame=c.render()[0] if first_frame else None, seed=i)
        for i, c in enumerate(clips)
    ])  # fmt: skip
    readings = read_clips(out)
    first = [
        (r.frames[0].colour, r.frames[0].shape, r.frames[0].background) ==
        (c.colour, c.shape, c.background) and r.frames[0].centre is not None
        and math.dist(r.frames[0].centre, c.centres()[0]) <= POSITION
        for r, c in zip(readings, clips, strict=True)
    ]  # fmt: skip
    continues = [
        r.frames[1].centre is not None
        and math.dist(r.frames[1].centre, c.centres()[0]) <= CONTINUES
        for r, c in zip(readings, clips, strict=True)
    ]
    held = [
        r.colour_constant and r.shape_constant and (r.colour, r.shape) == (c.colour, c.shape)
        for r, c in zip(readings, clips, strict=True)
    ]
    return {
        "first_frame_matches": round(float(np.mean(first)), 4),
        "continues": round(float(np.mean(continues)), 4),
        "direction": round(float(np.mean([r.direction == c.direction
                                          for r, c in zip(readings, clips, strict=True)])), 4),
        "colour_and_shape_held": round(float(np.mean(held)), 4),
        "clips": len(clips),
    }  # fmt: skip


def main() -> None:
    p = ship_parser(__doc__, "runs/first-frame-lora")
    p.add_argument("--clips", type=int, default=40, help="held-out clips per row")
    args = p.parse_args()

    import numpy as np

    from spacetime.formats.lora_files import LORA_FILE
    from spacetime.media import write_video
    from spacetime.pipelines.video import VideoPipeline
    from spacetime.world import sample_clips

    staging = stage(args.run / "model", DEST)
    clips = sample_clips(np.random.default_rng(2026), args.clips, "heldout")
    pipe = VideoPipeline.from_pretrained(precision="fp32")  # as the CLI gives the world model
    rows = {"prompt alone": evaluate(pipe, clips, False),
            "first frame, no LoRA": evaluate(pipe, clips, True)}  # fmt: skip
    pipe.load_lora(staging / LORA_FILE, name="first-frame", motion=True)
    rows["first frame + LoRA"] = evaluate(pipe, clips, True)
    print(json.dumps(rows), flush=True)
    for i, clip in enumerate(clips[:3]):
        out = pipe(clip.caption(), first_frame=clip.render()[0], seed=0)[0]
        write_video(ROOT / "docs" / "images" / f"first_frame_{i}.gif", out, fps=8)

    card = {
        "heldout": rows,
        "position_tolerance_px": POSITION,
        "continues_within_px": CONTINUES,
        "steps_done": json.loads((args.run / "export.json").read_text())["steps_done"],
        **run_facts(args.run, staging, args.machine),
    }
    publish(staging, DEST, card, model_card(card))


def model_card(card: dict) -> str:
    cfg = card["config"]
    rows = "\n".join(
        f"| {name} | {m['first_frame_matches']:.1%} | {m['continues']:.1%} | {m['direction']:.1%} | "
        f"{m['colour_and_shape_held']:.1%} |"
        for name, m in card["heldout"].items()
    )
    clips = next(iter(card["heldout"].values()))["clips"]
    return f"""# first-frame: a motion LoRA that continues a clip from an image

With `--first-frame IMAGE` the image's latent is the clip's frame 0, clean (timestep 0), while the
other frames are denoised around it (per-frame noise levels; spacetime/first_frame.py). The
default motion module never saw a clean frame beside noisy ones; this LoRA (rank {cfg["rank"]},
alpha {cfg["alpha"]:g}, on the motion modules' {", ".join(cfg["targets"])}) learned to continue one:
{card["shipped_megabytes"]} MB in fp16, PEFT/diffusers layout. The video CLI loads it with the default
world model:

    python -m spacetime.video "a red circle moving right" --first-frame red_circle.png

## Training

    python -m spacetime.train configs/world_first_frame_lora.yaml --out runs/first-frame-lora
    python tools/ship_first_frame_lora.py --run runs/first-frame-lora

Seed {cfg["seed"]}; {card["steps_done"]} steps of {cfg["batch_size"]} world motion clips of
{cfg["frames"]} frames (the training split), frame 0 given clean and the ε loss on the other frames
only; lr {cfg["lr"]:g} (cosine), EMA {cfg["ema_decay"]}, {cfg["caption_dropout"]:.0%} empty captions; the
default image model and motion module frozen. Wall time on {card["machine"]}:
{card["train_wall_seconds"] / 60:.1f} min.

## Metrics ({card["date"]})

{clips} held-out clips (colour x shape x direction combinations never trained on); each gives
the prompt and the image (its own first frame). Sampled as the CLI samples the world model
(FreeInit, DDIM 20 steps, guidance 7.5), the same seeds in every row; the oracle reads frame 0
(colour, shape, background, and its centre within {card["position_tolerance_px"]:g} px of the image's),
whether frame 1 continues from it (its object within {card["continues_within_px"]:g} px of the image's;
the world's objects move at most 2.5 px a frame), the direction, and whether the prompt's colour
and shape hold in every frame.

| sampler | frame 0 shows the image | frame 1 continues it | direction | colour & shape held |
|---|---|---|---|---|
{rows}
"""


if __name__ == "__main__":
    main()
