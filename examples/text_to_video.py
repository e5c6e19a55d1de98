"""Text to clip through the Python API: the default world models, or any SD 1.x model + adapter.

python examples/text_to_video.py "a red circle moving right" clip.gif
python examples/text_to_video.py --model path/to/sd15 --motion path/to/motion-adapter "a cat" cat.mp4
"""

import argparse

from spacetime.cli import run
from spacetime.media import write_video
from spacetime.pipelines.video import VideoPipeline


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("prompt")
    p.add_argument("out", help="clip.gif, clip.mp4, clip.webp or a folder for PNG frames")
    p.add_argument("--model", help="diffusers folder or single file (default: the world model)")
    p.add_argument("--motion", help="MotionAdapter folder or AnimateDiff file (default: shipped)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    # No model: the shipped world model with its motion module and temporal decoder.
    pipe = VideoPipeline.from_pretrained(args.model, motion=args.motion)
    # (n, t, h, w, 3) uint8: one clip per prompt; the same seed gives the same clip.
    clip = pipe(args.prompt, frames=args.frames, steps=args.steps, seed=args.seed, guidance=7.5)
    write_video(args.out, clip[0], fps=8)
    print(f"wrote {args.out} ({clip.shape[1]} frames of {clip.shape[3]}x{clip.shape[2]})")


if __name__ == "__main__":
    run(main)  # a SpacetimeError (a bad path, a bad value) prints as one `error:` line, exit 2
