"""The data-loading share of a motion training step on a folder of mp4s, with and without the
latent cache.

    python tools/bench_media_training.py [--clips 32] [--steps 6] [--out docs/benchmarks.md]

Writes --clips world zoom clips (16 frames, 64x64) as mp4s with .txt captions into a temporary
folder, then times the motion-LoRA task of configs/media_motion_lora.yaml on them (the shipped
world model, batch 8, 16 frames): per step, the batch (decode + resize + VAE encode, or drawing
from the cache) and the U-Net's forward and backward, median over --steps steps after one
warm-up; the cache's one-time build is reported too. Writes the section "## Training on your own
clips" of --out.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _shared import ROOT, cpu_name, log, write_section

HEADING = "## Training on your own clips"


def write_clips(folder: Path, count: int) -> None:
    import numpy as np

    from spacetime.media import write_video
    from spacetime.world.zoom import render_zoom_clips, sample_zoom_clips

    folder.mkdir(parents=True)
    clips = sample_zoom_clips(np.random.default_rng(0), count)
    for i, (clip, frames) in enumerate(zip(clips, render_zoom_clips(clips), strict=True)):
        write_video(folder / f"{i:03d}.mp4", frames, fps=8)
        (folder / f"{i:03d}.txt").write_text(clip.caption())


def time_steps(task, steps: int) -> dict:
    import torch

    module = task.build()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    loads, trains = [], []
    for step in range(steps + 1):
        start = time.perf_counter()
        batch = task.batch(step, 0, 1)
        loaded = time.perf_counter()
        loss = module(**batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        end = time.perf_counter()
        if step:  # the first step warms up
            loads.append(loaded - start)
            trains.append(end - loaded)
    load, train = statistics.median(loads), statistics.median(trains)
    return {"load_s": load, "train_s": train, "share": load / (load + train)}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = p.parse_args()

    import torch

    from spacetime.train.config import load_config
    from spacetime.train.lora import LoRATask

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-media-"))
    write_clips(work / "clips", args.clips)
    recipe = ROOT / "configs" / "media_motion_lora.yaml"
    rows = {}
    for label, extra in (("decode + encode every step", []),
                         ("latent cache", [f"latent_cache={work / 'cache'}"])):  # fmt: skip
        cfg = load_config(recipe, [f"media={work / 'clips'}", *extra])
        task = LoRATask(cfg)
        start = time.perf_counter()
        if task.data.cache is not None:  # builds it
            rows["cache build"] = time.perf_counter() - start
        rows[label] = time_steps(task, args.steps)
        log(f"{label}: {rows[label]}")

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        HEADING,
        "",
        f"`python tools/bench_media_training.py --clips {args.clips} --steps {args.steps}` on "
        f"{when}: {cpu_name()}, 2 threads, torch {torch.__version__}. The motion LoRA of "
        "`configs/media_motion_lora.yaml` (shipped world model, batch 8, 16 frames at 64x64) on "
        f"a folder of {args.clips} mp4s; median per step over {args.steps} steps after one "
        "warm-up. *Loading*: the step's batch (decode, resize and VAE encode, or drawing from the "
        "cache); *training*: the U-Net's forward, backward and the optimiser.",
        "",
        "| data | loading s | training s | loading share |",
        "|---|---:|---:|---:|",
    ]
    for label in ("decode + encode every step", "latent cache"):
        r = rows[label]
        lines.append(f"| {label} | {r['load_s']:.3f} | {r['train_s']:.3f} | {r['share']:.1%} |")
    lines += [
        "",
        f"Building the cache once took {rows['cache build']:.1f} s for {args.clips} clips.",
        "",
    ]
    section = "\n".join(lines)
    write_section(args.out, section, HEADING)
    print(section)


if __name__ == "__main__":
    main()
