"""Store a trained export's weights as fp16, in place: what ships, at half the size.

    python tools/to_fp16.py runs/world-motion/model [more folders ...]

Every *.safetensors file below each folder is rewritten with its floating-point tensors in fp16
(spacetime loads them back as fp32). A folder that does not exist is skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _shared import to_fp16


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("folders", nargs="+", type=Path, help="trained exports (e.g. runs/NAME/model)")
    for folder in p.parse_args().folders:
        if folder.is_dir():
            to_fp16(folder)


if __name__ == "__main__":
    main()
