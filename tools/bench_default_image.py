"""Time the embedded default model: load, then one 64×64 image with 20 DPM-Solver++ steps.

    python tools/bench_default_image.py [--out docs/benchmarks.md]

Writes the section "## Default image model" of the output file (replacing only that section).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from spacetime.formats.load import default_model
from spacetime.pipelines.image import load_pipeline

from _shared import cpu_name, write_section

HEADING = "## Default image model"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()

    rows = []
    for precision in ("auto", "fp32"):
        start = time.perf_counter()
        pipe = load_pipeline(default_model("image"), precision=precision)
        load = time.perf_counter() - start
        times = []
        for i in range(args.repeats + 1):  # the first call warms up
            start = time.perf_counter()
            pipe("a red circle", steps=20, scheduler="dpm++", seed=i)
            times.append(time.perf_counter() - start)
        rows.append(
            (f"{precision} ({pipe.precision})", load, statistics.median(times[1:]), min(times[1:]))
        )

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        HEADING,
        "",
        f"`python tools/bench_default_image.py` on {when}: {cpu_name()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}. One 64×64 image, prompt 'a red circle', 20 DPM-Solver++ "
        f"steps, guidance 7.5 (two U-Net passes per step), median of {args.repeats} after one warm-up.",
        "",
        "| precision | load s | s / image (median) | fastest |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {load:.2f} | {med:.3f} | {low:.3f} |" for name, load, med, low in rows),
        "",
        "Target (issue: default model): ≤ 1 s per image after load — "
        + ("met." if all(med <= 1.0 for _, _, med, _ in rows) else "not met."),
        "",
    ]
    section = "\n".join(lines)
    write_section(args.out, section, HEADING)
    print(section)


if __name__ == "__main__":
    main()
