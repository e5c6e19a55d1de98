"""Score an inverted-colours image LoRA: are held-out scenes drawn with their colours swapped?

    python tools/score_inverted.py runs/inverted-lora

Samples every held-out scene prompt whose background is an object colour (three seeds each, DDIM
20 steps, guidance 7.5, the shipped image model) with the run's LoRA at weight 1 and at weight 0
on the same seeds, and reads them with the oracle: `inverted` is the share drawn in the
background's colour on the object's colour, `shape` the share with the prompt's shape, `as asked`
the share drawn as the prompt says (the base model's reading).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", help="the LoRA run's --out folder")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()

    from spacetime.eval.oracle import read_images
    from spacetime.pipelines.image import ImagePipeline
    from spacetime.world import heldout_prompts, parse_caption
    from spacetime.world.palette import COLOURS

    pipe = ImagePipeline.from_pretrained(precision="fp32")
    pipe.load_lora(f"{args.run}/model", name="inverted")
    prompts = [q for q in heldout_prompts() if parse_caption(q).background in COLOURS]
    specs = [parse_caption(q) for q in prompts for _ in range(args.seeds)]
    rows = []
    for weight in (0.0, 1.0):
        pipe.set_lora_weights({"inverted": weight})
        images = np.concatenate([pipe(q, seed=0, num_images=args.seeds) for q in prompts])
        readings = read_images(images)
        pairs = list(zip(readings, specs, strict=True))
        rows.append({
            "lora_weight": weight,
            "inverted": np.mean([(r.colour, r.background) == (s.background, s.colour)
                                 for r, s in pairs]),
            "shape": np.mean([r.shape == s.shape for r, s in pairs]),
            "as asked": np.mean([(r.colour, r.background) == (s.colour, s.background)
                                 for r, s in pairs]),
            "images": len(images),
        })  # fmt: skip
        print(json.dumps({k: round(float(v), 4) for k, v in rows[-1].items()}), flush=True)


if __name__ == "__main__":
    main()
