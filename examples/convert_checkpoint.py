"""Convert between a diffusers folder and an original single-file checkpoint.

python examples/convert_checkpoint.py path/to/sd15-folder sd15.safetensors
python examples/convert_checkpoint.py sd15.safetensors path/to/new-folder
"""

import argparse
from pathlib import Path

from spacetime.cli import run
from spacetime.formats.diffusers import save_diffusers
from spacetime.formats.load import load_components
from spacetime.formats.single_file import save_single_file


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("source", help="diffusers folder or .safetensors/.ckpt file")
    p.add_argument("dest", type=Path, help="a .safetensors path or a new folder")
    args = p.parse_args()
    components = load_components(args.source)
    if args.dest.suffix == ".safetensors":
        save_single_file(components, args.dest)
    else:
        save_diffusers(components, args.dest)
    print(f"wrote {args.dest}")


if __name__ == "__main__":
    run(main)  # a SpacetimeError (a bad path, a bad value) prints as one `error:` line, exit 2
