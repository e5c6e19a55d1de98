"""python -m spacetime.train CONFIG.yaml --out DIR — train a world model with accelerate.

Multi-process: `accelerate launch -m spacetime.train ...` or
`torchrun --nproc_per_node N -m spacetime.train ...`; the global batch is split across processes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from spacetime.cli import Parser, entry_point, run


def parser() -> Parser:
    from spacetime.train.config import CONFIGS  # torch-free

    p = Parser(prog="python -m spacetime.train", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "config",
        nargs="?",
        type=Path,
        help=f"YAML recipe: `task:` ({', '.join(CONFIGS)}) picks the task, the other keys "
        "override its typed fields (see configs/)",
    )
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log, model/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable), e.g. --set steps=100")  # fmt: skip
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def read_config(path: Path | None, sets: list[str]):
    """load_config, with a missing, unreadable or malformed file as one clear line."""
    import yaml

    from spacetime.errors import SpacetimeError
    from spacetime.train.config import load_config

    if path is not None and not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise SpacetimeError(f"cannot read config {path}: {what}")
    try:
        return load_config(path, sets)
    except OSError as e:
        raise SpacetimeError(f"cannot read config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SpacetimeError(f"cannot read config {path}: not a text file") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise SpacetimeError(f"config {path or '--set'} is not plain YAML: {problem}{at}") from None
    except (TypeError, ValueError) as e:
        raise SpacetimeError(str(e)) from None


def check_out(out: Path) -> None:
    """The run folder: an existing folder, or one that can be made."""
    from spacetime.errors import SpacetimeError
    from spacetime.tempfiles import writable_place

    if os.path.isfile(out):  # os.path answers False where pathlib raises (a name too long)
        raise SpacetimeError(f"--out {out} is a file, not a run folder")
    try:
        writable_place(out / "config.json")
    except OSError as e:
        raise SpacetimeError(f"cannot write the run folder {out}: {e}") from None


def main(argv: list[str] | None = None) -> None:
    def body() -> None:
        import shutil

        args = parser().parse_args(argv)
        check_out(args.out)
        cfg = read_config(args.config, args.set)
        from spacetime.train.loop import train
        from spacetime.train.tasks import TASKS

        new = not args.out.exists()
        try:
            model = train(cfg, TASKS[cfg.task](cfg), args.out, resume=not args.no_resume,
                          progress=not args.quiet)  # fmt: skip
        except BaseException:
            # A run that failed before its first checkpoint leaves nothing to resume: remove the
            # folder it made, so that a failed start leaves the disk as it found it.
            if new and not any((args.out / "checkpoints").glob("step_*")):
                shutil.rmtree(args.out, ignore_errors=True)
            raise
        print(f"model in {model}")

    run(body)


# Training ends with the interpreter's teardown (accelerate's process groups close there).
script = entry_point(main, fast=False)  # the console script

if __name__ == "__main__":
    script()
