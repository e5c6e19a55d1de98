#!/usr/bin/env python
"""Benchmark text-to-video on the shipped default image model inflated with motion modules.

Measures, in one run:

* peak memory of a 16-frame and a 64-frame clip (64x64), each in a fresh subprocess: the peak
  resident set during generation above the resident set right after loading. The kernel's peak
  counter (VmHWM) is reset after loading (`/proc/self/clear_refs` 5), so the transient peak of
  loading the weights cannot mask the generation's; where that reset is refused, the process's
  ru_maxrss is used instead (and the section says so). Target: 64 frames <= 1.6x 16 frames.
* seconds for a 16-frame 64x64 clip after load (20 DPM-Solver++ steps, guidance 7.5), precision
  auto and fp32, median of --repeats after a warm-up. Target: <= 10 s.
* one motion-U-Net call (batch 2 as under guidance, 16 frames, fp32) of spacetime's inflated
  U-Net against diffusers' `UNetMotionModel` holding the same weights, alternating the two.

The motion modules are a fresh `inflate()` of the default U-Net saved as a MotionAdapter (or
--motion). Results go to the "## Video" section of docs/benchmarks.md (replaced on rerun) and to
results-video.json in the work folder. diffusers is imported here only; spacetime never is.

    python tools/bench_video.py                         # full run, writes the section
    python tools/bench_video.py --quick --out -         # check the tool in ~a minute, print only
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _shared import (
    ROOT,
    SD_MID_UNET,
    Samples,
    log,
    machine,
    status_mb,
    timed,
    wait_quiet,
    write_section,
)

SECTION = "## Video"
PROMPT = "a red circle moving right"
MEMORY_TARGET = 1.6  # peak memory, 64 frames / 16 frames
TIME_TARGET = 10.0  # seconds for 16 frames at 64x64 after load
# U-Nets for the motion-U-Net comparison: the shipped default's own config at its 64 px size,
# and the SD 1.x-shaped U-Net that tools/bench_image.py measures, at 256 px.
UNETS = {"default": dict(size=64), "sd-mid": dict(size=256, config=SD_MID_UNET)}


# --- peak memory: one subprocess per clip length ---------------------------------------------------


def _describe(windows, frames: int) -> str:
    if windows is None:
        return "whole clip"
    return f"{len(windows.starts(frames))} x {windows.frames}, overlap {windows.overlap}"


def memory_child(frames: int, motion: str, steps: int, precision: str, size: int) -> None:
    """(Runs in the subprocess.) Load, reset the peak counter, generate, print the JSON result."""
    import resource

    from spacetime.formats.load import default_model
    from spacetime.pipelines.video import VideoPipeline

    pipe = VideoPipeline.from_pretrained(default_model("image"), precision=precision, motion=motion)
    loaded = status_mb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        method = "VmHWM reset after load"
    except OSError:
        method = "ru_maxrss (peak counter could not be reset: includes loading)"
    start = time.perf_counter()
    clip = pipe(PROMPT, frames=frames, steps=steps, scheduler="dpm++", height=size, width=size)
    seconds = time.perf_counter() - start
    peak = (
        status_mb("VmHWM")
        if method.startswith("VmHWM")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    print(
        json.dumps(
            {
                "frames": frames,
                "shape": list(clip.shape),
                "rss_after_load_mb": loaded,
                "peak_mb": peak,
                "generation_mb": peak - loaded,
                "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "seconds": seconds,
                "precision": pipe.precision,
                "windows": _describe(
                    pipe.context_windows(pipe.request(PROMPT, frames=frames)), frames
                ),
                "method": method,
            }
        )
    )


def bench_memory(
    motion: Path, frames: list[int], steps: int, precision: str, size: int, workdir: Path
) -> dict:
    """Each clip length in its own fresh process, so no allocator state carries over."""
    runs = {}
    for n in frames:
        cmd = [sys.executable, __file__, "--memory-child", str(n), "--motion", str(motion),
               "--steps", str(steps), "--precision", precision]  # fmt: skip
        log_file = workdir / f"memory-{n}.log"
        with log_file.open("w") as err:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        if out.returncode:
            raise SystemExit(f"memory run for {n} frames failed; see {log_file}")
        runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"  {n} frames: {runs[n]['generation_mb']:.0f} MiB above the loaded process "
            f"({runs[n]['peak_mb']:.0f} MiB peak), {runs[n]['seconds']:.1f} s")  # fmt: skip
    short, long = runs[min(frames)], runs[max(frames)]
    return {"runs": runs, "ratio": long["generation_mb"] / short["generation_mb"], "size": size}


# --- seconds per 16-frame clip -----------------------------------------------------------------


def bench_time(
    motion: Path, frames: int, steps: int, size: int, repeats: int, max_share: float
) -> dict:
    """Median seconds per clip after load (one warm-up call), for precision auto and fp32, one
    plain sampling pass and the shipped world model's FreeInit passes (its CLI default)."""
    from spacetime.formats.load import default_model
    from spacetime.formats.motion import motion_free_init
    from spacetime.pipelines.video import VideoPipeline

    rows = {}
    for precision in ("auto", "fp32"):
        start = time.perf_counter()
        pipe = VideoPipeline.from_pretrained(
            default_model("image"), precision=precision, motion=motion
        )
        load = time.perf_counter() - start
        for free_init in (None, motion_free_init(default_model("motion"))):
            passes = "1 pass" if free_init is None else f"FreeInit {free_init.iterations} passes"
            call = functools.partial(
                pipe, PROMPT, frames=frames, steps=steps, scheduler="dpm++", height=size,
                width=size, free_init=free_init,
            )  # fmt: skip
            call()  # warm-up: oneDNN primitive creation, first-touch allocations
            samples = Samples(max_share)
            for _ in range(3 * repeats):
                if len(samples.clean) >= repeats:
                    break
                _, wall, share = timed(call)
                samples.add(wall, share)
            name = f"{precision} ({pipe.precision}), {passes}"
            rows[name] = {"load_s": load, **samples.summary()}
            log(f"  {name}: {samples.median():.2f} s per clip")
    return rows


# --- one motion-U-Net call against diffusers ---------------------------------------------------


def bf16_matmul_peak(sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    """FLOP/s of this machine's bf16 matrix multiply: the best n x n x n product over `sizes`
    (oneDNN's bf16 GEMM; AMX or AVX512-BF16), the ceiling a U-Net's bf16 layers work against."""
    import torch

    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n).to(torch.bfloat16) for _ in range(2))
        torch.mm(a, b)
        seconds = min(timed(lambda a=a, b=b: torch.mm(a, b))[1] for _ in range(repeats))
        best = max(best, 2 * n**3 / seconds)
    return best


def bench_unet(name: str, frames: int, warmup: int, repeats: int, max_share: float) -> dict:
    """Seconds per fp32 call of diffusers' UNetMotionModel and spacetime's inflated U-Net on the
    same weights and inputs, alternating them; plus their largest output difference."""
    import torch
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from torch.utils.flop_counter import FlopCounterMode

    from spacetime.formats.diffusers import build_unet
    from spacetime.formats.load import default_model
    from spacetime.formats.weights import load_into
    from spacetime.models.inflate import AnimateDiff, inflate
    from spacetime.models.unet import UNetConfig

    spec = UNETS[name]
    torch.manual_seed(0)
    if "config" in spec:
        ref2d = UNet2DConditionModel(**spec["config"]).eval()
    else:
        ref2d = UNet2DConditionModel.from_pretrained(str(default_model("image") / "unet")).eval()
    cfg = UNetConfig.from_diffusers(dict(ref2d.config))
    heads = AnimateDiff().heads
    adapter = MotionAdapter(  # diffusers' init leaves proj_out random: the modules mix frames
        block_out_channels=cfg.block_out_channels, motion_layers_per_block=cfg.layers_per_block,
        motion_num_attention_heads=heads, motion_norm_num_groups=cfg.norm_num_groups,
        motion_max_seq_length=32, use_motion_mid_block=True,
    )  # fmt: skip
    ref = UNetMotionModel.from_unet2d(ref2d, motion_adapter=adapter).eval()
    ours = inflate(build_unet(cfg, ref2d.state_dict()), AnimateDiff(heads=heads))
    load_into(ours, {k: v for k, v in ref.state_dict().items() if not k.endswith(".pe")}, "unet")
    ours.eval()
    params = sum(p.numel() for p in ours.parameters())

    g = torch.Generator().manual_seed(0)
    lat = spec["size"] // 8
    x = torch.randn(1, 4, frames, lat, lat, generator=g).repeat(2, 1, 1, 1, 1)  # CFG batch
    context = torch.randn(2, 77, cfg.cross_attention_dim, generator=g)
    t = torch.tensor(501)
    # diffusers' AnimateDiffPipeline repeats the prompt per frame; our U-Net does it inside.
    per_frame = context.repeat_interleave(frames, dim=0)
    # spacetime's `auto` on a bf16 CPU: bf16 weights; diffusers' CPU users: bf16 autocast.
    ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)
    x16, context16 = x.to(torch.bfloat16), context.to(torch.bfloat16)

    def autocast(fn):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()

    contenders = {
        "diffusers UNetMotionModel": lambda: ref(x, t, encoder_hidden_states=per_frame).sample,
        "spacetime inflated U-Net": lambda: ours(x, t, context),
        "diffusers bf16 autocast": lambda: autocast(
            lambda: ref(x, t, encoder_hidden_states=per_frame).sample
        ),
        "spacetime bf16": lambda: ours_bf16(x16, t, context16),
    }
    with torch.no_grad():
        with FlopCounterMode(display=False) as flops:
            ours(x, t, context)
        outputs = {n: fn() for n, fn in contenders.items()}
        for _ in range(warmup - 1):
            for fn in contenders.values():
                fn()
        samples = {n: Samples(max_share) for n in contenders}
        names = list(contenders)
        for r in range(3 * repeats):
            if all(len(s.clean) >= repeats for s in samples.values()):
                break
            for n in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
                _, wall, share = timed(contenders[n])
                samples[n].add(wall, share)
    want, got = outputs["diffusers UNetMotionModel"], outputs["spacetime inflated U-Net"]
    base = samples["diffusers UNetMotionModel"].median()
    for n, s in samples.items():
        log(f"  {name}: {n} {s.median():.3f} s/call ({s.median() / base:.2f}x)")
    return {
        "flops": flops.get_total_flops(),
        "bf16_matmul_peak": bf16_matmul_peak(),
        "size": spec["size"],
        "frames": frames,
        "params": params,
        "block_out_channels": list(cfg.block_out_channels),
        "heads": heads,
        "samples": {n: s.summary() for n, s in samples.items()},
        "ratio": samples["spacetime inflated U-Net"].median() / base,
        "bf16_max_abs_diff": (outputs["spacetime bf16"].float() - want).abs().max().item(),
        "max_abs_diff": (got - want).abs().max().item(),
        "output_std": want.std().item(),
        "torch_threads": torch.get_num_threads(),
    }


# --- report --------------------------------------------------------------------------------------


def render(r: dict) -> str:
    m, a, mem, tm = r["machine"], r["args"], r["memory"], r["time"]
    lines = [
        SECTION,
        "",
        f"Measured by `tools/bench_video.py` on {m['date']}: {m['cpu']} "
        f"({', '.join(m['isa']) or 'no AVX-512'}), {m['cores']} cores, {m['torch_threads']} torch "
        f"threads; Python {m['python']}, torch {m['torch']}, diffusers {m['diffusers']}. Load "
        f"average before/after: {r['loadavg'][0]:.1f} / {r['loadavg'][1]:.1f}.",
        "",
        f'Model: the shipped default image model with {r["motion"]}. Prompt "{PROMPT}", '
        f"{a['size']}x{a['size']}, DPM-Solver++, guidance 7.5, seed 0.",
        "",
        f"Command: `{r['command']}`",
        "",
        *(
            ["**--quick: a check of the tool (few steps and repeats), not results.**", ""]
            if a["quick"]
            else []
        ),
        f"### Peak memory, {a['steps']} steps, precision {a['precision']}",
        "",
        "Each clip length runs in a fresh process; *generation* is the peak resident set while "
        f"generating minus the resident set after loading (method: {mem['runs'][str(min(a['memory_frames']))]['method']}). "
        "Clips longer than the motion modules' frame positions are denoised in sliding context "
        "windows and decoded 8 frames at a time.",
        "",
        "| frames | windows | RSS after load MiB | peak MiB | generation MiB | process peak MiB | s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, run in mem["runs"].items():
        lines.append(
            f"| {n} | {run['windows']} | {run['rss_after_load_mb']:.0f} | {run['peak_mb']:.0f} | "
            f"{run['generation_mb']:.0f} | {run['process_peak_mb']:.0f} | {run['seconds']:.1f} |"
        )
    met = mem["ratio"] <= MEMORY_TARGET
    lines += [
        "",
        f"**Target (generation memory, {max(a['memory_frames'])} frames <= {MEMORY_TARGET}x "
        f"{min(a['memory_frames'])} frames): {'met' if met else 'not met'}** — {mem['ratio']:.2f}x.",
        "",
        f"### Seconds per {a['frames']}-frame clip after load, {a['steps']} steps, median of "
        f"{a['repeats']} after one warm-up",
        "",
        "| precision, sampling | load s | s / clip (median) | fastest | clean / timed |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in tm.items():
        lines.append(
            f"| {name} | {row['load_s']:.2f} | {row['median_s']:.2f} | {row['min_s']:.2f} | "
            f"{row['clean']} / {len(row['runs'])} |"
        )
    # What `python -m spacetime.video` runs with no flags: precision auto, the world model's FreeInit.
    default = tm[next(n for n in tm if n.startswith("auto") and "FreeInit" in n)]["median_s"]
    lines += [
        "",
        f"**Target (<= {TIME_TARGET:.0f} s per clip): {'met' if default <= TIME_TARGET else 'not met'}** "
        "— " + ", ".join(f"{n} {row['median_s']:.2f} s" for n, row in tm.items()) + ". The CLI's "
        "default for the world model is precision auto with FreeInit.",
        "",
        f"### One motion-U-Net call vs diffusers `UNetMotionModel` (fp32, batch 2, "
        f"{a['frames']} frames), median of {a['unet_repeats']}",
        "",
        "The same weights in both (diffusers' random init, motion modules included); a *clean* "
        f"call is one during which other processes used at most {100 * a['max_contention']:.0f}% of "
        "the CPU.",
        "",
        "| U-Net | size | parameters | diffusers s | spacetime s | spacetime / diffusers | clean calls | max abs diff (output std) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, u in r["unet"].items():
        d, s = u["samples"]["diffusers UNetMotionModel"], u["samples"]["spacetime inflated U-Net"]
        lines.append(
            f"| {name} {u['block_out_channels']} | {u['size']}x{u['size']} | {u['params']:,} | "
            f"{d['median_s']:.3f} | {s['median_s']:.3f} | {u['ratio']:.2f}x | "
            f"{d['clean']}+{s['clean']} / {len(d['runs']) + len(s['runs'])} | "
            f"{u['max_abs_diff']:.1e} ({u['output_std']:.2f}) |"
        )
    lines += [
        "",
        "### The same call in bf16, and its share of the bf16 matrix-multiply peak",
        "",
        "spacetime bf16: the U-Net's weights in bf16, as precision `auto` runs on this CPU; "
        'diffusers: fp32 weights under `torch.autocast("cpu", torch.bfloat16)`. FLOPs: '
        "`torch.utils.flop_counter` over one call (matrix multiplies, convolutions, attention). "
        "Peak: the best bf16 n x n x n `torch.mm` on this machine (n = 1024, 2048, 4096). Share of peak = FLOPs / "
        "seconds / peak.",
        "",
        "| U-Net | GFLOP / call | bf16 mm peak GFLOP/s | diffusers bf16 autocast s | spacetime bf16 s | spacetime bf16 / diffusers fp32 | share of peak: diffusers autocast | share of peak: spacetime bf16 | spacetime bf16 max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, u in r["unet"].items():
        d32 = u["samples"]["diffusers UNetMotionModel"]["median_s"]
        d16 = u["samples"]["diffusers bf16 autocast"]["median_s"]
        s16 = u["samples"]["spacetime bf16"]["median_s"]
        flops, peak = u["flops"], u["bf16_matmul_peak"]
        lines.append(
            f"| {name} | {u['flops'] / 1e9:.1f} | {u['bf16_matmul_peak'] / 1e9:.0f} | {d16:.3f} | "
            f"{s16:.3f} | {s16 / d32:.2f}x | {100 * flops / d16 / peak:.0f}% | {100 * flops / s16 / peak:.0f}% | "
            f"{u['bf16_max_abs_diff']:.1e} |"
        )
    lines.append("")
    return "\n".join(lines)


def fresh_motion(folder: Path) -> Path:
    """Motion modules built as the world recipe builds them (configs/world_motion.yaml: heads,
    text-reading modules), straight from initialisation, as a MotionAdapter folder: speed and
    memory depend on the architecture, not on the weights."""
    from spacetime.formats.motion import save_motion_adapter
    from spacetime.train.config import load_config
    from spacetime.train.motion import MotionTask

    task = MotionTask(load_config(ROOT / "configs" / "world_motion.yaml"))
    return save_motion_adapter(task.build().unet, folder)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Benchmark text-to-video: peak memory 16 vs 64 frames, seconds per clip, and "
        "one motion-U-Net call against diffusers' UNetMotionModel.",
    )
    p.add_argument("--out", default=None,
                   help="markdown file whose section to write, or - to only print (default "
                   "docs/benchmarks.md; with --quick: -)")  # fmt: skip
    p.add_argument("--workdir", type=Path, default=Path("/tmp/spacetime-bench-video"),
                   help="logs and results-video.json go here (default /tmp/spacetime-bench-video)")  # fmt: skip
    p.add_argument("--motion", type=Path, default=None,
                   help="MotionAdapter folder (default: the shipped default motion module, else a fresh "
                   "inflate() of the default U-Net as the recipe builds it)")  # fmt: skip
    p.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    p.add_argument("--frames", type=int, default=16, help="frames of the timed clip (default 16)")
    p.add_argument("--memory-frames", type=int, nargs=2, default=[16, 64],
                   help="the two clip lengths whose peak memory is compared (default 16 64)")  # fmt: skip
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="precision of the memory runs (default auto)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5, help="timed clips per precision (default 5)")
    p.add_argument("--unet", nargs="+", choices=sorted(UNETS), default=["default", "sd-mid"],
                   help="U-Nets for the motion-U-Net comparison (default: default sd-mid)")  # fmt: skip
    p.add_argument("--unet-repeats", type=int, default=5,
                   help="timed U-Net calls per contender (default 5)")  # fmt: skip
    p.add_argument("--unet-warmup", type=int, default=2,
                   help="untimed U-Net calls per contender (default 2)")  # fmt: skip
    p.add_argument("--max-contention", type=float, default=0.1,
                   help="repeat a timed call if other processes used more than this share of the "
                   "CPU meanwhile (default 0.1)")  # fmt: skip
    p.add_argument("--quiet-wait", type=float, default=60,
                   help="seconds to wait for a quiet machine before starting (default 60)")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="check the tool fast: 2 steps, 1 repeat, the default U-Net only "
                   "(numbers are not benchmark results)")  # fmt: skip
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.size = 64  # the default model's resolution (the targets are stated for 64x64)
    if a.memory_child is not None:
        memory_child(a.memory_child, str(a.motion), a.steps, a.precision, a.size)
        return
    if a.quick:
        a.steps, a.repeats, a.unet_repeats, a.unet_warmup, a.unet = 2, 1, 1, 1, ["default"]
        a.quiet_wait = 0
    if a.out is None:
        a.out = "-" if a.quick else str(ROOT / "docs" / "benchmarks.md")
    if min(a.steps, a.frames, a.repeats, a.unet_repeats, a.unet_warmup, *a.memory_frames) < 1:
        p.error("--steps, --frames, --repeats, --unet-* and --memory-frames must be >= 1")
    if not 0 < a.max_contention <= 1:
        p.error("--max-contention must be in (0, 1]")

    from spacetime.formats.load import default_model

    if default_model("image") is None:
        raise SystemExit("no default image model in this install (spacetime/assets/default-image)")
    a.workdir.mkdir(parents=True, exist_ok=True)
    command = "python tools/bench_video.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    wait_quiet(a.max_contention, a.quiet_wait)
    loadavg_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        shipped = default_model("motion")
        motion = a.motion or shipped or fresh_motion(Path(tmp) / "motion")
        described = (
            f"the motion modules of `{a.motion}`"
            if a.motion
            else "the shipped default motion module (`spacetime/assets/default-motion`)"
            if shipped
            else "motion modules built as `configs/world_motion.yaml` builds them (text-reading "
            "AnimateDiff modules, untrained: speed and memory do not depend on the weights), saved with "
            "`save_motion_adapter` and loaded through `motion=`)"
        )
        results = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
            "command": command.strip(),
            "machine": machine(),
            "motion": described,
        }
        log(f"peak memory, {a.memory_frames} frames")
        mem = bench_memory(motion, a.memory_frames, a.steps, a.precision, a.size, a.workdir)
        mem["runs"] = {str(k): v for k, v in mem["runs"].items()}
        results["memory"] = mem
        log(f"seconds per {a.frames}-frame clip")
        results["time"] = bench_time(motion, a.frames, a.steps, a.size, a.repeats, a.max_contention)
    log("one motion-U-Net call vs diffusers")
    results["unet"] = {
        name: bench_unet(name, a.frames, a.unet_warmup, a.unet_repeats, a.max_contention)
        for name in a.unet
    }
    results["loadavg"] = (loadavg_before, os.getloadavg()[0])
    (a.workdir / "results-video.json").write_text(json.dumps(results, indent=2) + "\n")
    section = render(results)
    print(section)
    if a.out != "-":
        write_section(Path(a.out), section, SECTION)
        log(f"wrote the section to {a.out}")


if __name__ == "__main__":
    main()
