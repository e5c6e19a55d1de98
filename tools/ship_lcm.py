"""Evaluate a few-step student (task: lcm) against its teacher and ship it as a LoRA.

    python tools/ship_lcm.py image --run runs/image-lcm    # -> spacetime/assets/lora/lcm-image
    python tools/ship_lcm.py video --run runs/motion-lcm   # -> spacetime/assets/lora/lcm-video

Writes the LoRA in fp16 with MODEL_CARD.md and metrics.json. The student samples as the CLIs'
few-step flags ask (the LoRA fused, LCM, 4 steps, guidance 1: one U-Net call per step; no
FreeInit); the teacher as the CLIs' defaults do (DDIM 20 steps, guidance 7.5, and FreeInit's 3
passes for clips),
on the same held-out prompts and seeds, read by the oracle: colour, shape and background for
images (20 prompts x 10), direction and colour-and-shape constancy for clips (--prompts spread
evenly over the held-out clip prompts, 3 clips each).
"""

from __future__ import annotations

import json

from _shared import ROOT, publish, run_facts, ship_parser, stage

STUDENT = dict(steps=4, guidance=1.0, scheduler="lcm")
TEACHER = dict(steps=20, guidance=7.5, scheduler="ddim")


def main() -> None:
    p = ship_parser(__doc__, "")
    p.add_argument("kind", choices=("image", "video"))
    p.add_argument("--prompts", type=int, default=54, help="held-out clip prompts (video)")
    p.add_argument("--skip-teacher", action="store_true", help="reuse the card's teacher rows")
    args = p.parse_args()

    from spacetime.formats.lora_files import LORA_FILE

    dest = ROOT / "spacetime" / "assets" / "lora" / f"lcm-{args.kind}"
    previous = dest / "metrics.json"
    staging = stage(args.run / "model", dest)
    pipe, evaluate = pipeline(args.kind, args.prompts)
    results = {}
    if args.skip_teacher and previous.exists():
        results["teacher"] = json.loads(previous.read_text())["teacher"]
    else:
        results["teacher"] = evaluate(pipe, TEACHER, free_init=True)
        print(json.dumps({"teacher": results["teacher"]}), flush=True)
    pipe.load_lora(staging / LORA_FILE, name="lcm")
    pipe.fuse_lora()
    results["student"] = evaluate(pipe, STUDENT, free_init=False)
    print(json.dumps({"student": results["student"]}), flush=True)
    card = {
        **results,
        "steps_done": json.loads((args.run / "export.json").read_text())["steps_done"],
        **run_facts(args.run, staging, args.machine),
    }
    publish(staging, dest, card, model_card(args.kind, card))


def pipeline(kind: str, prompts: int):
    """The shipped world model as the CLI loads it, and its evaluation (metrics only)."""
    if kind == "image":
        from spacetime.eval.text_to_image import evaluate
        from spacetime.pipelines.image import ImagePipeline

        def images(pipe, sampler: dict, free_init: bool) -> dict:
            return evaluate(pipe, seeds_per_prompt=10, **sampler)[0]

        return ImagePipeline.from_pretrained(precision="fp32"), images

    from spacetime.eval.text_to_video import evaluate_clips
    from spacetime.free_init import FreeInit
    from spacetime.pipelines.video import VideoPipeline

    pipe = VideoPipeline.from_pretrained(precision="fp32")
    world_free_init = pipe.free_init

    def clips(pipe, sampler: dict, free_init: bool) -> dict:
        pipe.free_init = world_free_init if free_init else None
        assert not free_init or isinstance(pipe.free_init, FreeInit)
        return evaluate_clips(pipe, seeds_per_prompt=3, limit=prompts, **sampler)[0]

    return pipe, clips


def model_card(kind: str, card: dict) -> str:
    cfg = card["config"]
    s, t = card["student"], card["teacher"]
    if kind == "image":
        columns = ("colour", "shape", "background", "all")
        what = "images"
        use = 'python -m spacetime.image "a red circle" --lora lcm-image --scheduler lcm --steps 4 --guidance 1'
        sample = f"{s['prompts']} held-out prompts (colour x shape x background pairs never trained on) x {s['images'] // s['prompts']} images"
    else:
        columns = ("direction", "constant_colour_and_shape", "colour", "shape", "background")
        what = "clips"
        use = 'python -m spacetime.video "a red circle moving right" --lora lcm-video --scheduler lcm --steps 4 --guidance 1 --free-init 0'
        sample = f"{s['prompts']} held-out clip prompts (spread evenly over all {162}) x {s['clips'] // s['prompts']} clips"
    header = "| sampler | U-Net calls | " + " | ".join(c.replace("_", " ") for c in columns) + " |"
    calls = {"student": 4, "teacher": 20 * 2 * (3 if kind == "video" else 1)}
    rows = [
        f"| {label} | {calls[key]} | " + " | ".join(f"{m[c]:.1%}" for c in columns) + " |"
        for label, key, m in (
            ("student: LCM, 4 steps, guidance 1", "student", s),
            (f"teacher: DDIM 20 steps, guidance 7.5{', FreeInit x3' if kind == 'video' else ''}", "teacher", t),
        )
    ]  # fmt: skip
    # the targets: clips keep direction and constancy, images every oracle figure
    targets = ("direction", "constant_colour_and_shape") if kind == "video" else columns[:-1]
    gaps = {c: t[c] - s[c] for c in targets}
    worst = max(gaps, key=gaps.get)
    verdict = (
        f"Within 3 points of the teacher on every figure: it holds (the largest gap: "
        f"{worst.replace('_', ' ')}, {gaps[worst] * 100:.1f} points)."
        if gaps[worst] <= 0.03
        else f"It does not hold: {worst.replace('_', ' ')} is {gaps[worst] * 100:.1f} points below the "
        'teacher, more than the 3 the few-step default allows (docs/benchmarks.md, "Few-step '
        "students\"), so the full sampler stays the CLI's default here."
    )
    init = f" Its spatial factors start from `{cfg['init_lora']}` (AnimateLCM's decoupled consistency learning)." if cfg.get("init_lora") else ""  # fmt: skip
    return f"""# lcm-{kind}: a 4-step student of the world {kind} model

Latent consistency distillation (Luo et al. 2023; as LCM-LoRA, a LoRA student) of the shipped world
{"clip model (default image model + default motion module)" if kind == "video" else "image model"}:
rank {cfg["rank"]}, alpha {cfg["alpha"]:g}, on {", ".join(cfg["targets"])}
({"spatial and motion-module layers" if kind == "video" else "the U-Net"}; cross-attention frozen).{init}
{card["shipped_megabytes"]} MB in fp16, PEFT/diffusers layout. It samples with the LCM sampler at
guidance 1: one U-Net call per step.

    {use}

## Training

    python -m spacetime.train configs/world_{"motion" if kind == "video" else "image"}_lcm.yaml --out {"runs/motion-lcm" if kind == "video" else "runs/image-lcm"}
    python tools/ship_lcm.py {kind} --run {"runs/motion-lcm" if kind == "video" else "runs/image-lcm"}

Seed {cfg["seed"]}; {card["steps_done"]} steps of {cfg["batch_size"]} world {what} (training split),
lr {cfg["lr"]:g} (cosine), EMA {cfg["ema_decay"]}; the teacher is the frozen model under guidance
{cfg["guidance"]:g}, one DDIM step of {1000 // cfg["original_inference_steps"]} timesteps
(original_inference_steps {cfg["original_inference_steps"]}). Wall time on {card["machine"]}:
{card["train_wall_seconds"] / 60:.1f} min.

## Metrics ({card["date"]})

{sample}, the same seeds for student and teacher, read by the oracle (spacetime/eval/oracle.py).

{header}
|---|---:|{"---:|" * len(columns)}
{chr(10).join(rows)}

{verdict}
"""


if __name__ == "__main__":
    main()
