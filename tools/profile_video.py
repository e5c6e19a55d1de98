"""Where a whole-process clip spends its time, spacetime against diffusers on the same weights.

    python tools/profile_video.py [--repeats 2] [--out docs/benchmarks.md]

The model is the mid-size SD checkpoint of tools/bench_image.py (an SD 1.x-shaped 142M U-Net, SD's
VAE, a CLIP-L-sized text encoder, random weights) with a random AnimateDiff MotionAdapter at its
widths; 16 frames at 128x128, 10 DDIM steps, guidance 7.5. Each contender runs as its own process
(tools/bench_scripts/spacetime_video_phases.py: the video CLI's body; .../diffusers_video_phases.py:
`AnimateDiffPipeline`, GIF written) with timestamps per phase: start-up (imports, then loading),
text encoding, sampling, VAE decode, writing. A second run of each samples under the CPU profiler,
with ranges around the U-Net and its motion modules: sampling then splits into temporal blocks
(the motion modules) and spatial blocks (the rest of the U-Net), and the U-Net's op time into
attention, GroupNorm/LayerNorm, activations and elementwise ops, convolutions, linear layers and
copies. Profiled shares are applied to the unprofiled sampling time (the profiler's own overhead
is left out). Writes "## Video profile: where a clip's time goes" of --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from _shared import (
    ROOT,
    build_checkpoint,
    clip_command,
    clip_phases,
    cpu_name,
    log,
    motion_adapter,
    parse_report,
    write_section,
)

HEADING = "## Video profile: where a clip's time goes"
RUN = dict(frames=16, steps=10, height=128, width=128, guidance=7.5, seed=0)
CONTENDERS = {
    "spacetime auto": ("spacetime", "auto"),
    "spacetime fp32": ("spacetime", "fp32"),
    "diffusers fp32": ("diffusers", "fp32"),
    "diffusers bf16 autocast": ("diffusers", "bf16"),
}
PARTS = ("attention", "group/layer norm", "activations & elementwise", "convolution", "linear",
         "copies & layout", "other")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=2, help="unprofiled runs per contender")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/spacetime-bench"))
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = p.parse_args()

    from _shared import UNET

    model, info = build_checkpoint(args.workdir)
    motion, motion_params = motion_adapter(args.workdir, UNET)
    log(f"U-Net {info['unet_params']:,}, motion adapter {motion_params:,} parameters")
    timings: dict[str, list[dict]] = {c: [] for c in args.contenders}
    profiles: dict[str, dict] = {}
    for r in range(args.repeats + 1):
        for name in args.contenders:  # interleaved; the last round runs under the profiler
            lib, precision = CONTENDERS[name]
            profile = r == args.repeats
            out = args.workdir / f"clip-{lib}.gif"
            cmd = clip_command(lib, precision, model, motion, out, RUN, profile=profile)
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
            if profile:
                profiles[name] = parse_report(done.stderr, "BENCH_PROFILE")
                log(f"{name} profiled: {json.dumps(profiles[name])}")
            else:
                timings[name].append(clip_phases(parse_report(done.stderr, "BENCH_PHASES")))
                log(f"{name}: {timings[name][-1]['total']:.1f} s")

    median = {
        name: {k: statistics.median(t[k] for t in runs) for k in runs[0]}
        for name, runs in timings.items()
    }
    rows = []

    def row(label: str, values: dict[str, float]) -> None:
        rows.append(
            f"| {label} | " + " | ".join(f"{values[n]:.2f}" for n in args.contenders) + " |"
        )

    for phase in ("imports", "loading", "text encoding", "sampling"):
        row(phase, {n: median[n][phase] for n in args.contenders})
    for label, key in (("· U-Net: temporal blocks", "temporal"), ("· U-Net: spatial blocks", None)):
        values = {}
        for n in args.contenders:  # the profile's shares of the unprofiled sampling time
            prof = profiles[n]
            part = prof["temporal"] if key else prof["unet"] - prof["temporal"]
            values[n] = median[n]["sampling"] * part / max(prof["unet"], 1e-9)
        row(label, values)
    for part in PARTS:
        values = {}
        for n in args.contenders:
            prof = profiles[n]
            total = max(sum(prof["parts"].values()), 1e-9)
            values[n] = median[n]["sampling"] * prof["parts"].get(part, 0.0) / total
        row(f"· U-Net ops: {part}", values)
    for phase in ("VAE decode", "writing", "total"):
        row(
            f"**{phase}**" if phase == "total" else phase,
            {n: median[n][phase] for n in args.contenders},
        )
    ratio = {n: median[n]["total"] / median["diffusers fp32"]["total"] for n in args.contenders}
    rows.append(
        "| vs diffusers fp32 | " + " | ".join(f"{ratio[n]:.2f}x" for n in args.contenders) + " |"
    )

    import torch

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        HEADING,
        "",
        f"`python tools/profile_video.py` on {when}: {cpu_name()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}. The mid-size checkpoint of the image benchmark "
        f"(U-Net {info['unet_params']:,} parameters) with a random AnimateDiff MotionAdapter at its "
        f"widths ({motion_params:,} parameters), {RUN['frames']} frames at "
        f"{RUN['height']}x{RUN['width']}, {RUN['steps']} DDIM steps, guidance {RUN['guidance']}; "
        "each contender a process of its own (spacetime: the video CLI's body, "
        "`--free-init 0`; diffusers: `AnimateDiffPipeline`, the GIF written by "
        f"`export_to_gif`). Seconds, median of {args.repeats} runs, interleaved. The U-Net rows "
        "(·) split the sampling time by a further profiled run of each: temporal blocks are the "
        "motion modules (inclusive), spatial blocks the rest of the U-Net; the op rows are the "
        "U-Net's own op time by kind (attention: SDPA, softmax and batched matmuls; linear: the "
        "projections and feed-forwards).",
        "",
        "| part | " + " | ".join(args.contenders) + " |",
        "|---|" + "---:|" * len(args.contenders),
        *rows,
        "",
    ])  # fmt: skip
    write_section(args.out, section, HEADING)
    print(section)
    (args.workdir / "profile-video.json").write_text(
        json.dumps({"timings": timings, "profiles": profiles}, indent=1)
    )


if __name__ == "__main__":
    main()
