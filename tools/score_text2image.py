"""Score a text-to-image model on held-out world prompts, read by the world's oracle.

    python tools/score_text2image.py runs/g-t2i/model --device cuda

Prints one JSON line of held-out accuracies (colour, shape, background, all three) per guidance
scale.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", help="a model folder (diffusers layout)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--guidance", type=float, nargs="+", default=[3.0, 7.5])
    args = p.parse_args()

    from spacetime.eval.text_to_image import evaluate
    from spacetime.pipelines.image import load_pipeline

    pipe = load_pipeline(args.model, args.device)
    for g in args.guidance:
        m, _ = evaluate(pipe, guidance=g, precision="fp32")
        print(json.dumps(m))


if __name__ == "__main__":
    main()
