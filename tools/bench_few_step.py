"""The default clip and image commands, whole process, against the same commands with the
world model's few-step students.

    python tools/bench_few_step.py [--repeats 5] [--out docs/benchmarks.md]

Runs the real CLIs as subprocesses, interleaved: `python -m spacetime.video "a red circle moving
right"` as written (the full sampler: DDIM 20 steps, guidance 7.5, FreeInit's 3 passes) against
the same command with the lcm-video student (`--lora lcm-video --scheduler lcm --steps 4
--guidance 1 --free-init 0`), and `python -m spacetime.image "a red circle"` against the same with
lcm-image. Reports the median wall time of `--repeats` clean runs (runs while others used more
than --max-contention of the CPU are repeated), the speed-up, and the U-Net calls each command
makes, counted in-process by wrapping the U-Net's forward. Writes the section "## Few-step
students: whole process" of --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from _shared import cpu_name, interleaved, log, write_section

HEADING = "## Few-step students: whole process"
COMMANDS = {
    "video": ["spacetime.video", "a red circle moving right"],
    "image": ["spacetime.image", "a red circle"],
}
# (flags before, flags after) of each command
FEW = ["--scheduler", "lcm", "--steps", "4", "--guidance", "1"]
FLAGS = {
    "video": ([], ["--lora", "lcm-video", *FEW, "--free-init", "0"]),
    "image": ([], ["--lora", "lcm-image", *FEW]),
}


def cli_args(task: str, before: bool, out: Path) -> list[str]:
    suffix = ".mp4" if task == "video" else ".png"
    return [*COMMANDS[task][1:], "--out", str(out / f"{task}{suffix}"),
            *FLAGS[task][0 if before else 1]]  # fmt: skip


def count_unet_calls(task: str, before: bool, out: Path) -> tuple[int, int]:
    """U-Net forwards of one CLI run in this process, and the rows they evaluated (a guided
    step runs both branches as one forward of two rows)."""
    import importlib

    from spacetime.models.unet import UNet2DCondition

    calls, rows = 0, 0
    forward = UNet2DCondition.forward

    def counted(self, x, *args, **kwargs):
        nonlocal calls, rows
        calls += 1
        rows += x.shape[0]
        return forward(self, x, *args, **kwargs)

    UNet2DCondition.forward = counted
    try:
        importlib.import_module(COMMANDS[task][0]).main(cli_args(task, before, out))
    finally:
        UNet2DCondition.forward = forward
    return calls, rows


def evaluations(counted: tuple[int, int]) -> str:
    calls, rows = counted
    return f"{rows} ({calls} calls)"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-contention", type=float, default=0.1)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-few-step-"))
    contenders = [(task, before) for task in COMMANDS for before in (True, False)]
    calls = {c: count_unet_calls(*c, work) for c in contenders}
    log(f"U-Net calls: {calls}")
    samples, _ = interleaved(
        contenders,
        lambda c: [sys.executable, "-m", COMMANDS[c[0]][0], *cli_args(*c, work)],
        args.repeats,
        args.max_contention,
    )

    import torch

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for task in COMMANDS:
        before, after = samples[task, True], samples[task, False]
        rows.append(
            f'| `python -m {COMMANDS[task][0]} "{COMMANDS[task][1]}"` '
            f"| {' '.join(FLAGS[task][0]) or '(as written)'} | {' '.join(FLAGS[task][1]) or '(as written)'} "
            f"| {before.median():.2f} | {evaluations(calls[task, True])} | {after.median():.2f} "
            f"| {evaluations(calls[task, False])} | {before.median() / after.median():.1f}x "
            f"| {len(before.clean)} + {len(after.clean)} / {len(before.runs) + len(after.runs)} |"
        )
    section = "\n".join([
        HEADING,
        "",
        f"`python tools/bench_few_step.py` on {when}: {cpu_name()}, torch {torch.__version__}, "
        "precision auto. Whole process (launch to file written), median of "
        f"{args.repeats} clean runs each, the two commands of a pair interleaved. *Before*: "
        "the command as written, the CLIs' default (DDIM 20 steps, guidance 7.5; FreeInit's 3 "
        "passes for the clip); *after*: the same with the world model's few-step student (LCM, "
        "4 steps, guidance 1). The students do not hold their teachers' oracle figures, so they "
        "are not the default (their model cards). U-Net evaluations are counted in-process: "
        "rows through the U-Net, as forward calls x batch rows (a guided step evaluates both "
        "branches in one call of two rows).",
        "",
        "| command | before: flags | after: flags | before s | U-Net evaluations | after s "
        "| U-Net evaluations | speed-up | clean runs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ])  # fmt: skip
    write_section(args.out, section, HEADING)
    print(section)
    (work / "samples.json").write_text(
        json.dumps(
            {f"{t} {'before' if b else 'after'}": s.summary() for (t, b), s in samples.items()},
            indent=1,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
