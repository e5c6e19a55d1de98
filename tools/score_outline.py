"""Score an outline-style image LoRA: are the held-out scenes drawn hollow, and still right?

    python tools/score_outline.py runs/outline-lora

Samples every held-out scene prompt (three seeds each, DDIM 20 steps, guidance 7.5, the shipped
image model) with the run's LoRA at weight 1 and at weight 0 on the same seeds. Per image the oracle
reads colour and shape; the fill is the share of the object's outer outline (its object-coloured
pixels with their holes filled) that is object-coloured: ~1 for a solid shape, ~0.45 for the world's
3-px outlines. An image counts as hollow below 0.75.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

HOLLOW_BELOW = 0.75


def fill(
    image: np.ndarray, colour: tuple[int, int, int], background: tuple[int, int, int]
) -> float:
    """The object's share of the area its outer outline encloses."""
    from scipy.ndimage import binary_fill_holes

    x = image.astype(np.float64)
    axis = np.subtract(colour, background, dtype=np.float64)
    alpha = ((x - background) @ axis) / max(axis @ axis, 1.0)
    mask = alpha > 0.5
    enclosed = binary_fill_holes(mask).sum()
    return float(mask.sum() / enclosed) if enclosed else 1.0


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", help="the LoRA run's --out folder")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()

    from spacetime.eval.oracle import read_images, score
    from spacetime.pipelines.image import ImagePipeline
    from spacetime.world import heldout_prompts, parse_caption
    from spacetime.world.palette import COLOURS, background_rgb

    pipe = ImagePipeline.from_pretrained(precision="fp32")
    pipe.load_lora(f"{args.run}/model", name="outline")
    prompts = heldout_prompts()
    specs = [parse_caption(q) for q in prompts for _ in range(args.seeds)]
    for weight in (0.0, 1.0):
        pipe.set_lora_weights({"outline": weight})
        images = np.concatenate([pipe(q, seed=0, num_images=args.seeds) for q in prompts])
        fills = [
            fill(im, COLOURS[s.colour], background_rgb(s.background))
            for im, s in zip(images, specs, strict=True)
        ]
        m = score(read_images(images), specs)
        print(json.dumps({
            "lora_weight": weight, "hollow": round(float(np.mean(np.less(fills, HOLLOW_BELOW))), 4),
            "median_fill": round(float(np.median(fills)), 3), "colour": m["colour"],
            "shape": m["shape"], "background": m["background"], "images": len(images),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
