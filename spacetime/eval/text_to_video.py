"""Text-to-video quality on the world: generate held-out motion prompts, track them with the oracle."""

from __future__ import annotations

import time

import numpy as np

from spacetime.eval.oracle import read_clips, score
from spacetime.world import heldout_clip_prompts, heldout_prompts, parse_caption, parse_clip_caption

# A clip whose object grows by this much from the first frame to the last reads as a zoom in; the
# world's zoom-in clips grow 1.5-2x, still-camera clips 1x.
ZOOM_DETECTED = 1.25


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
    options = dict(frames=frames, steps=steps, guidance=guidance, scheduler=scheduler)
    clips = generate(pipe, prompts, seeds_per_prompt, **options)
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


def generate(pipe, prompts: list[str], seeds_per_prompt: int, **options) -> np.ndarray:
    """`seeds_per_prompt` clips per prompt (seed 0 of each prompt's batch) -> (n, t, h, w, 3)."""
    return np.concatenate(
        [pipe(p, seed=0, num_images=seeds_per_prompt, **options) for p in prompts]
    )


def evaluate_zoom(
    pipe,
    prompts: list[str] | None = None,
    seeds_per_prompt: int = 3,
    frames: int = 16,
    steps: int = 20,
    guidance: float = 7.5,
    scheduler: str = "ddim",
) -> tuple[dict, np.ndarray]:
    """A camera move (zoom in) on still-scene prompts, the held-out scenes by default: the share
    of clips whose object grows by ZOOM_DETECTED or more, their median growth, and the share
    whose object keeps the asked colour and shape in every frame."""
    prompts = heldout_prompts() if prompts is None else prompts
    started = time.time()
    options = dict(frames=frames, steps=steps, guidance=guidance, scheduler=scheduler)
    clips = generate(pipe, prompts, seeds_per_prompt, **options)
    readings = read_clips(clips)
    specs = [parse_caption(p) for p in prompts for _ in range(seeds_per_prompt)]
    held = [
        r.colour_constant and r.shape_constant and (r.colour, r.shape) == (s.colour, s.shape)
        for r, s in zip(readings, specs, strict=True)
    ]
    metrics = {
        "zoom_detected": round(float(np.mean([r.zoom >= ZOOM_DETECTED for r in readings])), 4),
        "median_zoom": round(float(np.median([r.zoom for r in readings])), 3),
        "colour_and_shape_held": round(float(np.mean(held)), 4),
        **{k: round(v, 4) for k, v in score(readings, specs).items()},
        "clips": len(specs), "prompts": len(prompts), "frames": frames, "steps": steps,
        "guidance": guidance, "scheduler": scheduler, "seconds": round(time.time() - started, 1),
    }  # fmt: skip
    return metrics, clips
