"""Multi-view quality on the world: generate 4-view sets of primitives, read every view back.

    python -m spacetime.eval.multiview runs/world-multiview/model

Held-out colour × solid pairs (never trained on) and trained ones, each as a set of views at known
cameras, read by the 3D oracle (spacetime/eval/oracle3d.py): accuracy of the sets and of single
views, and how often all views of a set agree (the multi-view consistency MVDream is for).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np

from spacetime.eval.oracle3d import read_view_sets, score
from spacetime.world.captions import PrimitiveSpec, parse_primitive_caption, primitive_caption
from spacetime.world.palette import COLOURS, SOLIDS
from spacetime.world.primitives import HELDOUT_PRIMITIVES, Camera


def primitive_prompts(split: str) -> list[str]:
    """Every caption of a split's colour × solid pairs: 4 held out, 36 trained."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'heldout'")
    return [
        primitive_caption(PrimitiveSpec(shape, colour))
        for colour in COLOURS
        for shape in SOLIDS
        if ((colour, shape) in HELDOUT_PRIMITIVES) == (split == "heldout")
    ]


def evaluate(
    pipe,
    prompts: Sequence[str],
    sets_per_prompt: int = 4,
    cameras: Sequence[Camera] | None = None,
    steps: int = 20,
    guidance: float = 5.0,
    scheduler: str = "dpm++",
    precision: str | None = None,
) -> tuple[dict, np.ndarray]:
    """Scores of prompts × sets_per_prompt generated sets (see oracle3d.score); returns (metrics,
    views (n, v, h, w, 3)), set i answering prompt i // sets_per_prompt."""
    from spacetime.pipelines.multiview import default_cameras

    cameras = default_cameras() if cameras is None else list(cameras)
    started = time.time()
    # One call per prompt: its sets share one seeded generator (seed 0), so runs reproduce.
    views = np.concatenate(
        [
            pipe(
                prompt,
                cameras=cameras,
                steps=steps,
                guidance=guidance,
                scheduler=scheduler,
                seed=0,
                num_images=sets_per_prompt,
                precision=precision,
            )  # fmt: skip
            for prompt in prompts
        ]
    )
    specs = [parse_primitive_caption(p) for p in prompts for _ in range(sets_per_prompt)]
    metrics = {k: round(v, 4) for k, v in score(read_view_sets(views, cameras), specs).items()}
    metrics.update(
        sets=len(specs), prompts=len(prompts), views=len(cameras), steps=steps,
        guidance=guidance, scheduler=scheduler, seconds=round(time.time() - started, 1),
    )  # fmt: skip
    return metrics, views


def evaluate_splits(pipe, heldout_sets: int = 8, train_sets: int = 2, **options) -> dict:
    """Held-out pairs (4 prompts × heldout_sets) and trained pairs (36 × train_sets)."""
    return {
        "heldout": evaluate(pipe, primitive_prompts("heldout"), heldout_sets, **options)[0],
        "train": evaluate(pipe, primitive_prompts("train"), train_sets, **options)[0],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m spacetime.eval.multiview",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="a multi-view model folder (diffusers layout)")
    p.add_argument("--heldout-sets", type=int, default=8, help="sets per held-out prompt")
    p.add_argument("--train-sets", type=int, default=2, help="sets per trained prompt")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = p.parse_args(argv)

    from spacetime.cli import pick_device
    from spacetime.pipelines.multiview import MultiViewPipeline

    pipe = MultiViewPipeline.from_pretrained(args.model, pick_device(args.device), precision="fp32")
    metrics = evaluate_splits(
        pipe, args.heldout_sets, args.train_sets, steps=args.steps, guidance=args.guidance
    )
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
