"""Score a motion run's modules on held-out world prompts: direction and colour constancy.

    python tools/score_motion.py runs/g-motion --device cuda --limit 48

Loads the run's motion modules (RUN/model/motion) over the default image model, samples clips of
held-out prompts, reads them with the world's oracle and prints one JSON line per guidance scale.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", help="a training run's --out folder")
    p.add_argument("--base", default="spacetime/assets/default-image", help="the image model")
    p.add_argument("--device", default="cuda")
    p.add_argument("--limit", type=int, default=48, help="held-out prompts to evaluate")
    p.add_argument("--guidance", type=float, nargs="+", default=[7.5])
    args = p.parse_args()

    from spacetime.eval.text_to_video import evaluate_clips
    from spacetime.pipelines.video import VideoPipeline

    pipe = VideoPipeline.from_pretrained(
        args.base, args.device, "fp32", f"{args.run}/model/motion", "per-frame"
    )
    for g in args.guidance:
        m = evaluate_clips(pipe, guidance=g, limit=args.limit)[0]
        print(json.dumps({"run": args.run, **m}))


if __name__ == "__main__":
    main()
