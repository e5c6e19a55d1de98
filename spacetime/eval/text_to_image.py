"""Text-to-image quality on the world: generate held-out prompts, read them with the oracle."""

from __future__ import annotations

import time

import numpy as np

from spacetime.eval.oracle import read_images, score
from spacetime.world import heldout_prompts, parse_caption


def evaluate(
    pipe,
    prompts: list[str] | None = None,
    seeds_per_prompt: int = 10,
    steps: int = 20,
    guidance: float = 5.0,
    scheduler: str = "dpm++",
    precision: str | None = None,
) -> tuple[dict, np.ndarray]:
    """Accuracy per attribute over prompts × seeds (default: every held-out prompt × 10 = 200).

    Returns (metrics, images); image i answers prompt i // seeds_per_prompt.
    """
    prompts = heldout_prompts() if prompts is None else prompts
    jobs = [p for p in prompts for _ in range(seeds_per_prompt)]
    started = time.time()
    # One call per prompt: its images share one seeded generator (seed 0), so runs reproduce.
    images = [
        pipe(
            prompt,
            steps=steps,
            guidance=guidance,
            scheduler=scheduler,
            seed=0,
            num_images=seeds_per_prompt,
            precision=precision,
        )  # fmt: skip
        for prompt in prompts
    ]
    images = np.concatenate(images)
    metrics = score(read_images(images), [parse_caption(p) for p in jobs])
    metrics = {k: round(v, 4) for k, v in metrics.items()}
    metrics.update(
        images=len(jobs), prompts=len(prompts), steps=steps, guidance=guidance,
        scheduler=scheduler, seconds=round(time.time() - started, 1),
    )  # fmt: skip
    return metrics, images


def grid(images: np.ndarray, columns: int) -> np.ndarray:
    """(n, h, w, 3) → one (rows·h, columns·w, 3) image, row-major."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    padded = np.zeros((rows * columns, h, w, c), dtype=images.dtype)
    padded[:n] = images
    return (
        padded.reshape(rows, columns, h, w, c)
        .transpose(0, 2, 1, 3, 4)
        .reshape(rows * h, columns * w, c)
    )
