"""Throughput of batch generation on this machine: jobs per minute with 1 and with 2 processes.

    python tools/bench_batch.py [--jobs 24] [--out docs/benchmarks.md]

Writes a jobs file of --jobs world-model jobs (images and 16-frame clips in equal numbers, ordered so
that job i mod 2 splits them evenly; the CLIs' default settings, distinct seeds), then runs `python -m spacetime.batch` on it once in one
process and once under `torchrun --nproc_per_node 2`, each into a fresh folder, and reports
wall time and jobs per minute, whole process (launch to exit). Both runs use one OpenMP thread
per process (torchrun's default) and, for the single process, also its default thread count.
Writes the section "## Batch generation" of --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from _shared import ROOT, cpu_name, log, timed, wait_quiet, write_section

HEADING = "## Batch generation"


def jobs_file(folder: Path, count: int) -> Path:
    lines = []
    for i in range(count):
        if i % 4 in (1, 2):  # half clips, and every process of two gets half of each kind
            lines.append({"task": "video", "prompt": "a red circle moving right", "seed": i})
        else:
            lines.append({"task": "image", "prompt": "a blue square", "seed": i})
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in lines))
    return path


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=24)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    jobs = jobs_file(work, args.jobs)
    batch = ["-m", "spacetime.batch", str(jobs), "--out"]
    runs = {
        "1 process, default threads": ([sys.executable, *batch], {}),
        "1 process, 1 thread": ([sys.executable, *batch], {"OMP_NUM_THREADS": "1"}),
        "2 processes (torchrun), 1 thread each": (
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *batch],
            {"OMP_NUM_THREADS": "1"},
        ),
    }
    rows = []
    for label, (cmd, env) in runs.items():
        wait_quiet(0.1, 30)
        done, seconds, share = timed(
            lambda cmd=cmd, env=env, label=label: subprocess.run(
                [*cmd, str(work / label.replace(" ", "_"))], cwd=ROOT,
                env={**os.environ, **env}, capture_output=True, text=True,
            )
        )  # fmt: skip
        if done.returncode:
            sys.exit(f"{label} failed:\n{done.stderr}")
        log(f"{label}: {seconds:.1f} s (others {share:.0%})")
        rows.append((label, seconds, share))

    import torch

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    single = rows[0][1]
    section = "\n".join([
        HEADING,
        "",
        f"`python tools/bench_batch.py --jobs {args.jobs}` on {when}: {cpu_name()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}. {args.jobs} jobs on the shipped "
        "world model at the CLIs' defaults, half 64x64 images (DDIM 20, guidance 7.5) and half "
        "16-frame clips (the same, with FreeInit's 3 passes), ordered so that each of two "
        "processes gets half of each; whole process, launch to exit.",
        "",
        "| run | wall s | jobs / min | vs 1 process | others' CPU share |",
        "|---|---:|---:|---:|---:|",
        *(f"| {label} | {s:.1f} | {60 * args.jobs / s:.1f} | {single / s:.2f}x | {share:.0%} |"
          for label, s, share in rows),
        "",
    ])  # fmt: skip
    write_section(args.out, section, HEADING)
    print(section)


if __name__ == "__main__":
    main()
