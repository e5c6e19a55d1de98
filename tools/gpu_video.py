"""The video comparison on a lent GPU: spacetime against diffusers' `AnimateDiffPipeline` on
SD 1.5-sized random weights, 16 frames at 512x512, whole process, in one short run.

    python tools/gpu_video.py [--repeats 2] [--out $OUT/gpu-video.md]     # on the device, < 10 min
    python tools/gpu_video.py --quick --device cpu                       # a check of the script

The checkpoint is SD 1.5's shape (U-Net 320/640/1280/1280, ~860M parameters; SD's VAE; a
CLIP-L-sized text encoder) with diffusers' random init and a random AnimateDiff v2 MotionAdapter
at its widths (~450M), built once in --workdir. Each contender is a process of its own
(tools/bench_scripts/*_video_phases.py) that reports its phases, synchronised with the device,
and its CUDA memory peak:

- spacetime fp32 and spacetime auto (fp16 weights on CUDA), `--attention` as given;
- diffusers fp32, and fp16 weights (`torch_dtype=torch.float16`, how GPU users run it);
- with --bf16 also both at bf16 (spacetime's bf16 weights, diffusers' bf16 autocast).

Sampling has no host synchronisation inside the loop on either side, so the per-step time is
the sampling phase over the steps. The table and a JSON of every run go to --out and beside it.
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
    SD15_UNET,
    UNET,
    build_checkpoint,
    clip_command,
    clip_phases,
    log,
    motion_adapter,
    parse_report,
)

RUN = dict(frames=16, steps=10, height=512, width=512, guidance=7.5, seed=0)
QUICK = dict(frames=2, steps=2, height=64, width=64, guidance=7.5, seed=0)
CONTENDERS = {
    "spacetime fp32": ("spacetime", "fp32"),
    "spacetime auto": ("spacetime", "auto"),
    "diffusers fp32": ("diffusers", "fp32"),
    "diffusers fp16": ("diffusers", "fp16"),
}
BF16 = {"spacetime bf16": ("spacetime", "bf16"), "diffusers bf16 autocast": ("diffusers", "bf16")}
PHASES = ("imports", "loading", "text encoding", "sampling", "VAE decode", "writing", "total")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for --quick")
    p.add_argument("--repeats", type=int, default=2, help="runs per contender, interleaved")
    p.add_argument("--attention", default="auto", help="spacetime's --attention (auto, sdpa, ...)")
    p.add_argument("--bf16", action="store_true", help="also both libraries at bf16")
    p.add_argument("--quick", action="store_true", help="the mid-size model, 2 frames at 64x64")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/spacetime-gpu-bench"))
    p.add_argument("--out", type=Path, default=Path("gpu-video.md"))
    args = p.parse_args()

    unet_config, run = (UNET, QUICK) if args.quick else (SD15_UNET, RUN)
    model, info = build_checkpoint(args.workdir, unet=unet_config)
    motion, motion_params = motion_adapter(args.workdir, unet_config)
    log(f"U-Net {info['unet_params']:,}, motion adapter {motion_params:,} parameters")
    contenders = {**CONTENDERS, **(BF16 if args.bf16 else {})}
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, (lib, precision) in contenders.items():
            extra = ("--attention", args.attention) if lib == "spacetime" else ()
            out = args.workdir / f"clip-{lib}-{precision}.gif"
            cmd = clip_command(lib, precision, model, motion, out, run, args.device, extra=extra)
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
            report = parse_report(done.stderr, "BENCH_PHASES")
            runs[name].append({**clip_phases(report), "peak GiB": report.get("peak_gib")})
            log(f"{name}: {runs[name][-1]['total']:.1f} s, peak {report.get('peak_gib')} GiB")

    import torch

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    base = statistics.median(r["total"] for r in runs["diffusers fp32"])
    rows = []
    for name, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in PHASES}
        peaks = [r["peak GiB"] for r in results if r["peak GiB"] is not None]
        peak = f"{max(peaks):.2f}" if peaks else "-"
        step = med["sampling"] / run["steps"]
        cells = " | ".join(f"{med[k]:.2f}" for k in PHASES)
        rows.append(f"| {name} | {cells} | {step:.3f} | {peak} | {med['total'] / base:.2f}x |")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"`python tools/gpu_video.py{' --quick' if args.quick else ''}` on {when}: {device}, "
        f"torch {torch.__version__}. U-Net {info['unet_params']:,} parameters with a "
        f"MotionAdapter of {motion_params:,}; {run['frames']} frames at "
        f"{run['height']}x{run['width']}, {run['steps']} DDIM steps, guidance {run['guidance']}; "
        f"spacetime --attention {args.attention}. Seconds, median of {args.repeats} runs each, "
        "interleaved; peak: torch.cuda.max_memory_allocated.",
        "",
        "| contender | " + " | ".join(PHASES) + " | s / step | peak GiB | vs diffusers fp32 |",
        "|---|" + "---:|" * (len(PHASES) + 3),
        *rows,
        "",
    ])  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1))
    print(text)


if __name__ == "__main__":
    main()
