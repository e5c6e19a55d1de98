"""python -m spacetime.train CONFIG.yaml --out DIR — train a world model with accelerate.

Multi-process: `accelerate launch -m spacetime.train ...` or
`torchrun --nproc_per_node N -m spacetime.train ...`; the global batch is split across processes.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m spacetime.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("config", nargs="?", help="YAML file overriding TrainConfig fields")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log, model/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable), e.g. --set steps=100")  # fmt: skip
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from spacetime.cli import run

    def body() -> None:
        from spacetime.errors import SpacetimeError
        from spacetime.train.config import load_config
        from spacetime.train.loop import train
        from spacetime.train.tasks import TASKS

        try:
            cfg = load_config(args.config, args.set)
        except ValueError as e:
            raise SpacetimeError(str(e)) from None
        model = train(cfg, TASKS[cfg.task](cfg), args.out, resume=not args.no_resume,
                      progress=not args.quiet)  # fmt: skip
        print(f"model in {model}")

    run(body)


if __name__ == "__main__":
    main()
