"""Text to a coloured 3D mesh through the Python API, with a turntable preview.

python examples/text_to_mesh.py "a red cube" cube.glb --preview cube.gif
python examples/text_to_mesh.py --model path/to/sd15 --single-view "a red cube" cube.glb
"""

import argparse

from spacetime.cli import run
from spacetime.media import write_video
from spacetime.threed import text_to_mesh
from spacetime.threed.export import write_mesh
from spacetime.threed.rasterise import turntable


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("prompt")
    p.add_argument("out", help="output .glb, .obj or .ply")
    p.add_argument("--model", default=None, help="default: the shipped multi-view model")
    p.add_argument("--single-view", action="store_true", help="DreamFusion-style guidance")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preview", default=None, help="turntable .mp4 or .gif of the mesh")
    args = p.parse_args()

    def report(progress) -> None:
        if progress.step % 50 == 0 or progress.step == progress.steps:
            print(f"step {progress.step}/{progress.steps} loss {progress.loss:.4g}")

    mesh = text_to_mesh(
        args.prompt,
        args.model,
        steps=args.steps,
        seed=args.seed,
        single_view=args.single_view,
        progress=report,
    )
    write_mesh(mesh, args.out)
    print(f"wrote {args.out}: {len(mesh.vertices)} vertices, watertight={mesh.is_watertight}")
    if args.preview:
        write_video(args.preview, turntable(mesh, frames=24), fps=12)
        print(f"wrote {args.preview}")


if __name__ == "__main__":
    run(main)  # a SpacetimeError (a bad path, a bad value) prints as one `error:` line, exit 2
