"""Score a consistency-distilled student (task: lcm) on the world's held-out prompts.

    python tools/score_lcm.py runs/motion-lcm --video     # clips: 162 prompts x 3 clips
    python tools/score_lcm.py runs/image-lcm              # images: 20 prompts x 10 images

Loads the run's LoRA onto the shipped world model and samples with the LCM sampler at guidance 1
(one U-Net call per step, no FreeInit), then reads the outputs with the oracle: direction and
colour-and-shape constancy for clips (spacetime.eval.text_to_video.evaluate_clips), colour, shape
and background for images (spacetime.eval.text_to_image.evaluate). Prints one JSON line per step
count. The teacher's figures are in the default models' cards.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", help="the lcm run's --out folder")
    p.add_argument("--video", action="store_true", help="a clip student (else an image one)")
    p.add_argument("--steps", type=int, nargs="+", default=[4])
    p.add_argument("--limit", type=int, default=None, help="held-out prompts (default all)")
    p.add_argument("--per-prompt", type=int, default=None, help="outputs per prompt")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance (1: one U-Net call per step)")  # fmt: skip
    p.add_argument("--original-steps", type=int, default=None,
                   help="the LCM grid to sample on (default: the model's scheduler config)")  # fmt: skip
    p.add_argument("--free-init", type=int, default=0, help="FreeInit passes for clips (0: off)")
    args = p.parse_args()

    if args.video:
        from spacetime.eval.text_to_video import evaluate_clips
        from spacetime.pipelines.video import VideoPipeline

        pipe = VideoPipeline.from_pretrained(precision="fp32")
        if args.free_init:
            pipe.enable_free_init(iterations=args.free_init)
        else:
            pipe.disable_free_init()
    else:
        from spacetime.eval.text_to_image import evaluate
        from spacetime.pipelines.image import ImagePipeline

        pipe = ImagePipeline.from_pretrained(precision="fp32")
    pipe.load_lora(f"{args.run}/model", name="lcm")
    if args.original_steps:
        pipe.set_schedule(original_inference_steps=args.original_steps)
    pipe.fuse_lora()
    for steps in args.steps:
        common = dict(steps=steps, guidance=args.guidance, scheduler="lcm")
        if args.video:
            m, _ = evaluate_clips(pipe, seeds_per_prompt=args.per_prompt or 3, limit=args.limit,
                                  **common)  # fmt: skip
        else:
            m, _ = evaluate(pipe, seeds_per_prompt=args.per_prompt or 10, **common)
        print(json.dumps({"run": args.run, **m}), flush=True)


if __name__ == "__main__":
    main()
