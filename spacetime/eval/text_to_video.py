"""Text-to-video quality on the world: generate held-out motion prompts, track them with the oracle."""

from __future__ import annotations

import time

import numpy as np

from spacetime.eval.oracle import read_clips, score
from spacetime.world import heldout_clip_prompts, parse_clip_caption


def spread_evenly(prompts: list[str], limit: int | None) -> list[str]:
    """`limit` of the prompts spread evenly over the list (all of them without a limit)."""
    if limit is None or limit >= len(prompts):
        return prompts
    return [prompts[i] for i in np.linspace(0, len(prompts) - 1, limit).round().astype(int)]


def evaluate_clips(
    pipe,
    prompts: list[str] | None = None,
    seeds_per_prompt: int = 1,
    frames: int = 16,
    steps: int = 20,
    guidance: float = 5.0,
    scheduler: str = "dpm++",
    limit: int | None = None,
) -> tuple[dict, np.ndarray]:
    """Direction accuracy and per-clip constancy of colour and shape over held-out prompts.

    Prompts default to every held-out clip prompt (spread evenly when `limit` is set).
    """
    prompts = spread_evenly(heldout_clip_prompts() if prompts is None else prompts, limit)
    started = time.time()
    clips = np.concatenate(
        [
            pipe(
                p,
                frames=frames,
                steps=steps,
                guidance=guidance,
                scheduler=scheduler,
                seed=0,
                num_images=seeds_per_prompt,
            )  # fmt: skip
            for p in prompts
        ]
    )
    readings = read_clips(clips)
    specs = [parse_clip_caption(p) for p in prompts for _ in range(seeds_per_prompt)]
    metrics = {k: round(v, 4) for k, v in score(readings, specs).items()}
    metrics["constant_colour_and_shape"] = round(
        float(np.mean([r.colour_constant and r.shape_constant for r in readings])), 4
    )
    metrics.update(
        clips=len(specs), prompts=len(prompts), frames=frames, steps=steps, guidance=guidance,
        seconds=round(time.time() - started, 1),
    )  # fmt: skip
    return metrics, clips
