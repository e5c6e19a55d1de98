"""What one ControlNet costs a clip: time and peak memory of 16- and 64-frame clips with the
shipped world ControlNet, as ratios to the same clips without it, in one run.

    python tools/bench_controlnet.py [--repeats 3] [--out docs/benchmarks.md]

Runs `python -m spacetime.video "a red circle moving right" --frames N --free-init 0`, with and
without `--control world-mask --control-image SILHOUETTE`, each as its own process (the CLI's
main, so the peak resident memory is that one clip's), interleaved. The 64-frame clip outgrows the
motion module's 32 frame positions, so it is denoised in 16-frame context windows and the
ControlNet runs window by window: its memory stays that of one window. Reports the median wall time
of --repeats clean runs and the peak RSS; writes the section "## ControlNet: cost per clip" of --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from _shared import cpu_name, interleaved, write_section

HEADING = "## ControlNet: cost per clip"
PROMPT = "a red circle moving right"
# The CLI's main in this process, then its peak resident memory (VmHWM) on the last line.
RUNNER = (
    "import re, sys\nfrom spacetime.video import main\nmain(sys.argv[1:])\n"
    "text = open('/proc/self/status').read()\n"
    "print(int(re.search(r'^VmHWM:\\s+(\\d+) kB', text, re.M).group(1)) / 1024)\n"
)


def command(frames: int, control: bool, work: Path) -> list[str]:
    args = [PROMPT, "--frames", str(frames), "--free-init", "0", "--out", str(work / "clip.mp4")]
    if control:
        args += ["--control", "world-mask", "--control-image", str(work / "silhouette.png")]
    return [sys.executable, "-c", RUNNER, *args]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    p.add_argument("--max-contention", type=float, default=0.1)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = p.parse_args()

    from spacetime.media import write_image
    from spacetime.world import Scene

    work = Path(tempfile.mkdtemp(prefix="bench-controlnet-"))
    write_image(
        work / "silhouette.png", Scene("circle", "white", "black", (22.0, 30.0), 12.0).render()
    )
    contenders = [(frames, control) for frames in args.frames for control in (False, True)]
    samples, runs = interleaved(
        contenders, lambda c: command(*c, work), args.repeats, args.max_contention
    )
    peaks = {c: [float(r.stdout.strip().splitlines()[-1]) for r in runs[c]] for c in contenders}

    import torch

    rows = []
    for frames in args.frames:
        plain, controlled = samples[frames, False], samples[frames, True]
        peak_plain, peak_controlled = max(peaks[frames, False]), max(peaks[frames, True])
        rows.append(
            f"| {frames} | {plain.median():.2f} | {controlled.median():.2f} "
            f"| {controlled.median() / plain.median():.2f}x | {peak_plain:.0f} "
            f"| {peak_controlled:.0f} | {peak_controlled / peak_plain:.2f}x "
            f"| {len(plain.clean)} + {len(controlled.clean)} / "
            f"{len(plain.runs) + len(controlled.runs)} |"
        )
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        HEADING,
        "",
        f"`python tools/bench_controlnet.py` on {when}: {cpu_name()}, torch {torch.__version__}, "
        f'precision auto. `python -m spacetime.video "{PROMPT}" --frames N --free-init 0` on the '
        "shipped world model (DDIM 20 steps, guidance 7.5), whole process, against the same with "
        "`--control world-mask --control-image SILHOUETTE` (one ControlNet on every frame); "
        f"median of {args.repeats} clean runs, interleaved; peak resident memory of each "
        "process (VmHWM, the largest seen). 64 frames outgrow the motion module's 32 frame "
        "positions: the clip is denoised in 16-frame context windows, the ControlNet inside "
        "each window.",
        "",
        "| frames | without s | with s | time ratio | without MiB | with MiB | memory ratio "
        "| clean runs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ])  # fmt: skip
    write_section(args.out, section, HEADING)
    print(section)
    (work / "samples.json").write_text(
        json.dumps({f"{f} {c}": s.summary() for (f, c), s in samples.items()}, indent=1)
    )


if __name__ == "__main__":
    main()
