"""Text to image through the Python API.

python examples/text_to_image.py "a red circle" red.png          # the shipped world model
python examples/text_to_image.py --model path/to/sd15 "a red circle" red.png
"""

import argparse

import numpy as np
from PIL import Image

from spacetime import load_pipeline
from spacetime.cli import run


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", help="diffusers folder or single-file checkpoint (default: the shipped model)"
    )
    p.add_argument("prompt")
    p.add_argument("out", help="output .png")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    pipe = load_pipeline(args.model)
    # Two samplers on the same seed: DDIM, then DPM-Solver++ with Karras sigmas.
    ddim = pipe(args.prompt, steps=args.steps, seed=args.seed, scheduler="ddim")
    dpm = pipe(args.prompt, steps=args.steps, seed=args.seed, scheduler="dpm++", karras=True)
    side_by_side = [ddim[0], dpm[0]]
    Image.fromarray(np.concatenate(side_by_side, axis=1)).save(args.out)
    print(f"wrote {args.out} (left: DDIM, right: DPM-Solver++ Karras)")


if __name__ == "__main__":
    run(main)  # a SpacetimeError (a bad path, a bad value) prints as one `error:` line, exit 2
