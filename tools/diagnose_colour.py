"""When does a clip's colour settle? The oracle reads every frame's x0 estimate, step by step.

    python tools/diagnose_colour.py "a blue triangle moving up on an orange background"
    python tools/diagnose_colour.py --limit 24 --quiet   # held-out prompts, summary only

For each prompt it samples one clip (one pass unless --free-init) and decodes the sampler's
estimate of the clean clip after every step, so each row shows what each frame would look like if
sampling stopped there. A colour that settles while the clip is still noisy is shared by the motion
modules; one that settles in the last steps is decided by the frozen image layers frame by frame,
and can flip between frames. With `--frames 1` the rows are independent single images of the
prompt through the same model, nothing coupling them: how the colour settles image by image. The
summary gives, per step, the share of frames that already show their final colour and the share
that show the asked one.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from spacetime.eval.oracle import read_images
from spacetime.eval.text_to_video import spread_evenly
from spacetime.free_init import FreeInit
from spacetime.pipelines.video import VideoPipeline
from spacetime.world import heldout_clip_prompts, parse_clip_caption


def trajectory(
    pipe: VideoPipeline, prompt: str, args: argparse.Namespace
) -> tuple[list[int], list[list[str]]]:
    """Per sampler step, its timestep and the oracle's colour of each frame (or image) of the
    x0 estimate."""
    clip = args.frames > 1
    req = pipe.request(
        prompt, frames=args.frames, steps=args.steps, guidance=args.guidance,
        scheduler=args.scheduler, seed=args.seed,
        free_init=FreeInit(iterations=args.free_init) if args.free_init > 1 else None,
        num_images=1 if clip else args.images,
    )  # fmt: skip
    steps: list[tuple[int, torch.Tensor]] = []
    pipe.sample_latents(req, on_step=lambda _k, t, x0: steps.append((t, x0.clone())))
    rows = []
    for _, x0 in steps:
        pixels = pipe.decode(x0)
        frames = pixels[0] if clip else pixels  # (t, h, w, 3) either way
        rows.append([r.colour or "-" for r in read_images(frames)])
    return [t for t, _ in steps], rows


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("prompts", nargs="*", help="clip prompts; none: held-out prompts (--limit)")
    p.add_argument("--limit", type=int, default=8, help="held-out prompts when none are given")
    p.add_argument("--motion", default=None, help="motion package (default: the shipped one)")
    p.add_argument("--frames", type=int, default=16, help="1: independent single images")
    p.add_argument("--images", type=int, default=16, help="images per prompt with --frames 1")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--scheduler", default="dpm++")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--free-init", type=int, default=1, help="FreeInit passes, rows for each")
    p.add_argument("--quiet", action="store_true", help="summary only, no per-prompt rows")
    args = p.parse_args()

    prompts = args.prompts or spread_evenly(heldout_clip_prompts(), args.limit)
    pipe = VideoPipeline.from_pretrained(None, "cpu", "fp32", args.motion)
    settled, asked_share = [], []  # per prompt, per step: shares of frames
    for prompt in prompts:
        timesteps, rows = trajectory(pipe, prompt, args)
        asked = parse_clip_caption(prompt).colour
        settled.append([np.mean([a == b for a, b in zip(r, rows[-1], strict=True)]) for r in rows])
        asked_share.append([np.mean([c == asked for c in r]) for r in rows])
        if not args.quiet:
            print(prompt)
            for t, r in zip(timesteps, rows, strict=True):
                print(f"  t={t:4d}  " + " ".join(c[:2] for c in r))
    each = f"a {args.frames}-frame clip" if args.frames > 1 else f"{args.images} single images"
    print(f"\n{len(prompts)} prompts, {each} each: share of frames showing")
    print("     t  their final colour  the asked colour")
    for k, t in enumerate(timesteps):
        f = np.mean([s[k] for s in settled])
        a = np.mean([s[k] for s in asked_share])
        print(f"  {t:4d}  {f:18.2f}  {a:16.2f}")


if __name__ == "__main__":
    main()
