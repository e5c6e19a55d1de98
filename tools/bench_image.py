#!/usr/bin/env python
"""Benchmark `python -m spacetime.image` against diffusers on one mid-size random-weight checkpoint.

Measures, in one run and alternating the contenders so they share the machine's conditions:

* per-step U-Net time (batch 2 for classifier-free guidance, the same input, timestep and context)
  for diffusers fp32 / bf16 autocast and spacetime fp32 / auto;
* whole-process wall time of the image CLI versus a minimal diffusers script
  (tools/bench_scripts/diffusers_txt2img.py) as subprocesses, with a phase breakdown (import,
  load, text encode, sampling, VAE decode, save) from instrumented runs;
* output agreement: spacetime's and diffusers' fp32 PNGs at the same seed, and auto vs fp32 PSNR.

The results go to a "## Image generation vs diffusers" section of docs/benchmarks.md (replaced on
rerun) and to results.json in the work folder. diffusers is imported here only, never by spacetime.

    python tools/bench_image.py                      # 20 steps, 256x256, 3 process repeats
    python tools/bench_image.py --repeats 5 --out -  # print the section, leave the docs alone
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _shared import (
    ROOT,
    TEXT,
    UNET,
    Samples,
    build_checkpoint,
    log,
    machine,
    timed,
    wait_quiet,
    write_section,
)

SECTION = "## Image generation vs diffusers"
PROMPT = "a red circle"
TARGET = 0.5  # whole process, spacetime (auto) / diffusers (fp32)

# --- per-step U-Net --------------------------------------------------------------------------------


def bench_unet(model: Path, size: int, warmup: int, repeats: int, max_share: float) -> dict:
    """Median seconds per U-Net call for each contender, alternating them every round, until each
    has `repeats` calls undisturbed by other processes (or 3x as many rounds have run)."""
    import contextlib

    import torch
    from diffusers import UNet2DConditionModel

    from spacetime.formats.load import load_components
    from spacetime.precision import DTYPES, resolve_precision

    ours = load_components(model).unet.eval()
    ref = UNet2DConditionModel.from_pretrained(str(model / "unet")).eval()
    auto = resolve_precision("auto", "cpu")
    g = torch.Generator().manual_seed(0)
    lat = size // 8
    x = torch.randn(1, 4, lat, lat, generator=g).repeat(2, 1, 1, 1)  # CFG: the same latent twice
    context = torch.randn(2, 77, TEXT["hidden_size"], generator=g)
    t = torch.tensor(501)
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    none = contextlib.nullcontext

    def run(forward, ctx):
        def call():
            with torch.no_grad(), ctx():
                return forward().float()

        return call

    theirs = lambda: ref(x, t, encoder_hidden_states=context).sample  # noqa: E731
    mine = lambda: ours(x, t, context)  # noqa: E731
    # What the pipeline runs at `auto`: weights cast once, channels-last (spacetime.pipelines).
    cast = copy.deepcopy(ours).to(DTYPES[auto], memory_format=torch.channels_last)
    x_auto = x.to(DTYPES[auto]).contiguous(memory_format=torch.channels_last)
    mine_auto = lambda: cast(x_auto, t, context.to(DTYPES[auto]))  # noqa: E731
    contenders = {
        "diffusers fp32": run(theirs, none),
        "diffusers bf16 autocast": run(theirs, bf16),
        "spacetime fp32": run(mine, none),
        f"spacetime auto ({auto} weights)": run(mine_auto, none),
    }
    outputs = {name: fn() for name, fn in contenders.items()}
    for _ in range(warmup - 1):
        for fn in contenders.values():
            fn()
    samples = {name: Samples(max_share) for name in contenders}
    names = list(contenders)
    for r in range(3 * repeats):
        if all(len(s.clean) >= repeats for s in samples.values()):
            break
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            _, wall, share = timed(contenders[name])
            samples[name].add(wall, share)
    base = outputs["diffusers fp32"]
    check = {
        name: {
            "max_abs_diff_vs_diffusers_fp32": (out - base).abs().max().item(),
            "rel_rms_vs_diffusers_fp32": ((out - base).pow(2).mean() / base.pow(2).mean())
            .sqrt()
            .item(),
        }
        for name, out in outputs.items()
    }
    result = {
        "median_s": {n: s.median() for n, s in samples.items()},
        "samples": {n: s.summary() for n, s in samples.items()},
        "agreement": check,
        "output_std": base.std().item(),
        "auto_resolves_to": auto,
        "torch_threads": torch.get_num_threads(),
    }
    return result


# --- whole process ---------------------------------------------------------------------------------

# Scripts the whole-process runs launch, beside the real `python -m spacetime.image`.
SCRIPTS = Path(__file__).resolve().parent / "bench_scripts"
DIFFUSERS_SCRIPT = SCRIPTS / "diffusers_txt2img.py"  # the diffusers baseline, all its runs
SPACETIME_PHASES_SCRIPT = SCRIPTS / "spacetime_image_phases.py"  # the CLI with phase timestamps


def phases(stamps: dict, launched: float, ended: float) -> dict:
    """Seconds per phase from a script's timestamps (and the parent's launch/exit times)."""
    if "last_step" not in stamps:  # one step: the first is the last
        stamps["last_step"] = stamps["first_step"]
    return {
        "interpreter": stamps["start"] - launched,
        "import": stamps["imported"] - stamps["start"],
        "load": stamps["loaded"] - stamps["imported"],
        "text_encode": stamps["encoded"] - stamps["loaded"],
        "first_step": stamps["first_step"] - stamps["encoded"],
        "sampling": stamps["last_step"] - stamps["encoded"],
        "vae_decode": stamps["decoded"] - stamps["last_step"],
        "save": stamps["saved"] - stamps["decoded"],
        "exit": ended - stamps["saved"],
        "import_and_load": stamps["loaded"] - launched,
    }


def run_process(cmd: list[str], env: dict, log_file: Path) -> tuple[float, dict | None, float]:
    """Wall seconds from launch to exit, the phase timestamps if the script printed them, and the
    share of the machine others used meanwhile."""
    launched = time.time()
    proc, wall, share = timed(
        lambda: subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True)
    )
    ended = time.time()
    log_file.write_text(
        f"$ {shlex.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"command failed ({proc.returncode}), see {log_file}:\n{proc.stderr[-3000:]}"
        )
    stamps = None
    for line in proc.stderr.splitlines():
        if line.startswith("BENCH_PHASES "):
            stamps = phases(json.loads(line.split(" ", 1)[1]), launched, ended)
    return wall, stamps, share


def bench_processes(
    model: Path, workdir: Path, steps: int, size: int, repeats: int, max_share: float,
    quiet_wait: float, retries: int,
) -> dict:  # fmt: skip
    """Whole-process wall times (medians), instrumented phase breakdowns and the output images."""
    py = sys.executable
    out = workdir / "out"
    logs = workdir / "logs"
    out.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    env = dict(os.environ)
    # Bytecode as an installed package has it, for both contenders, kept out of the source trees.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    env["HF_HUB_OFFLINE"] = "1"
    common = [PROMPT, "--model", str(model), "--steps", str(steps), "--height", str(size), "--width", str(size)]  # fmt: skip

    def spacetime(precision: str, png: Path, script: list[str]) -> list[str]:
        return [py, *script, *common, "--precision", precision, "--out", str(png)]

    def diffusers(precision: str, png: Path) -> list[str]:
        return [py, str(DIFFUSERS_SCRIPT), *common, "--precision", precision, "--out", str(png)]

    contenders = {
        "spacetime fp32": lambda png: spacetime("fp32", png, ["-m", "spacetime.image"]),
        "spacetime auto": lambda png: spacetime("auto", png, ["-m", "spacetime.image"]),
        "diffusers fp32": lambda png: diffusers("fp32", png),
        "diffusers bf16 autocast": lambda png: diffusers("bf16", png),
    }
    slug = lambda name: name.replace(" ", "-")  # noqa: E731

    def clean_run(cmd: list[str], log_file: Path, samples: Samples | None = None):
        """Run after waiting for a quiet machine; repeat (up to `retries` times) if disturbed."""
        for attempt in range(retries + 1):
            waited = wait_quiet(max_share, quiet_wait)
            wall, stamps, share = run_process(cmd, env, log_file)
            ok = share <= max_share
            if samples is not None:
                samples.add(wall, share)
            log(f"  {wall:.2f} s, others used {100 * share:.0f}% of the CPU"
                f"{f' (waited {waited:.0f} s for quiet)' if waited > 1.5 else ''}"
                f"{'' if ok or attempt == retries else ', repeating'}")  # fmt: skip
            if ok:
                break
        return wall, stamps, share

    # Warm-up (page cache, bytecode): import both stacks once, untimed.
    run_process([py, "-c", "import diffusers.pipelines, spacetime.pipelines.image, spacetime.image"],
                env, logs / "warmup.log")  # fmt: skip
    # Instrumented runs for the phase breakdown.
    breakdown: dict[str, dict] = {}
    instrumented = {
        "spacetime fp32": lambda png: spacetime("fp32", png, [str(SPACETIME_PHASES_SCRIPT)]),
        "spacetime auto": lambda png: spacetime("auto", png, [str(SPACETIME_PHASES_SCRIPT)]),
        "diffusers fp32": contenders["diffusers fp32"],
        "diffusers bf16 autocast": contenders["diffusers bf16 autocast"],
    }
    for name, cmd in instrumented.items():
        log(f"instrumented run: {name}")
        _, stamps, share = clean_run(
            cmd(out / f"{slug(name)}-phases.png"), logs / f"{slug(name)}-phases.log"
        )
        breakdown[name] = dict(stamps, others_share=share)

    walls = {name: Samples(max_share) for name in contenders}
    diffusers_phases: dict[str, list[dict]] = {
        n: [] for n in contenders if n.startswith("diffusers")
    }
    names = list(contenders)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            log(f"round {r + 1}/{repeats}: {name}")
            _, stamps, share = clean_run(
                contenders[name](out / f"{slug(name)}.png"),
                logs / f"{slug(name)}-{r}.log",
                walls[name],
            )
            if stamps is not None and share <= max_share:
                diffusers_phases[name].append(dict(stamps, others_share=share))
    # The diffusers baseline is the script itself, so its breakdown is the median over every run.
    for name, runs in diffusers_phases.items():
        runs.append(breakdown[name])
        breakdown[name] = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
    startup = {"spacetime --help": [py, "-m", "spacetime.image", "--help"],
               "diffusers import": [py, "-c", "from diffusers import StableDiffusionPipeline"]}  # fmt: skip
    startup_s = {}
    for name, cmd in startup.items():
        log(f"start-up: {name}")
        samples = Samples(max_share)
        for _ in range(3):
            clean_run(cmd, logs / "startup.log", samples)
        startup_s[name] = samples.median()
    return {
        "median_s": {n: s.median() for n, s in walls.items()},
        "samples": {n: s.summary() for n, s in walls.items()},
        "phases": breakdown,
        "startup_s": startup_s,
        "images": {n: str(out / f"{slug(n)}.png") for n in contenders},
        "commands": {n: shlex.join(contenders[n](out / f"{slug(n)}.png")) for n in contenders},
    }


def compare_images(images: dict[str, str]) -> dict:
    import numpy as np
    from PIL import Image

    load = lambda name: np.asarray(Image.open(images[name]).convert("RGB")).astype(np.int16)  # noqa: E731
    ref = load("diffusers fp32")

    def psnr(a, b) -> float:
        mse = float(((a - b) ** 2).mean())
        return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)

    st32, st_auto, d_bf16 = (
        load("spacetime fp32"),
        load("spacetime auto"),
        load("diffusers bf16 autocast"),
    )
    diff = np.abs(st32 - ref)
    return {
        "fp32_within_3": float((diff <= 3).mean()),
        "fp32_max_abs": int(diff.max()),
        "fp32_psnr": psnr(st32, ref),
        "auto_vs_fp32_psnr": psnr(st_auto, st32),
        "auto_vs_fp32_max_abs": int(np.abs(st_auto - st32).max()),
        "diffusers_bf16_vs_fp32_psnr": psnr(d_bf16, ref),
        "image_mean": float(ref.mean()),
        "image_std": float(ref.std()),
        "saturated_fraction": float(((ref == 0) | (ref == 255)).mean()),
    }


# --- report ----------------------------------------------------------------------------------------


def fmt_s(s: float) -> str:
    return f"{s:.2f}"


def render(r: dict) -> str:
    m, info, u, p, img, a = (
        r["machine"],
        r["model"],
        r["unet"],
        r["process"],
        r["images"],
        r["args"],
    )
    lines = [SECTION, ""]
    lines += [
        f"Measured by `tools/bench_image.py` on {m['date']}: {m['cpu']} ({', '.join(m['isa']) or 'no AVX-512'}), "
        f"{m['cores']} cores, {m['torch_threads']} torch threads; Python {m['python']}, torch {m['torch']}, "
        f"diffusers {m['diffusers']}, transformers {m['transformers']}. Load average before/after: "
        f"{r['loadavg'][0]:.1f} / {r['loadavg'][1]:.1f}. Contenders alternate, and every timed run records "
        "the share of the CPU other processes took meanwhile (see *clean* below).",
        "",
        f"Checkpoint: a random-weight SD 1.x-shaped `StableDiffusionPipeline` saved with `save_pretrained`: "
        f"U-Net {info['unet_params']:,} parameters (block_out_channels {list(UNET['block_out_channels'])}, "
        f"8 heads, cross-attention 768), the SD VAE architecture ({info['vae_params']:,}; decoder "
        f"{info['vae_decoder_params']:,}), a CLIP ViT-L/14-sized text encoder ({info['text_params']:,}; "
        f"tokenizer: {info['tokenizer']}), DDIM with SD 1.5's schedule. {a['size']}x{a['size']}, "
        f'{a["steps"]} steps, guidance 7.5, seed 0, prompt "{PROMPT}".',
        "",
        f"Command: `{r['command']}`",
        "",
        f"### Per-step U-Net (batch 2, {a['size'] // 8}x{a['size'] // 8} latents), median of {a['unet_repeats']}",
        "",
        "| contender | s / call (median) | vs diffusers fp32 | fastest call | clean / timed calls | max abs diff vs diffusers fp32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = u["median_s"]["diffusers fp32"]
    for name, s in u["median_s"].items():
        diff = u["agreement"][name]["max_abs_diff_vs_diffusers_fp32"]
        sm = u["samples"][name]
        lines.append(
            f"| {name} | {s:.3f} | {s / base:.2f}x | {sm['min_s']:.3f} | {sm['clean']} / "
            f"{len(sm['runs'])} | {diff:.1e} |"
        )
    lines += [
        "",
        f"U-Net output std {u['output_std']:.2f}; `auto` resolves to {u['auto_resolves_to']} on this machine.",
        "",
        f"### Whole process, median of {a['repeats']} runs each",
        "",
        f"A *clean* run is one during which other processes used at most {100 * a['max_contention']:.0f}% "
        "of the machine's CPU; disturbed runs were repeated and medians use the clean ones.",
        "",
        "`python -m spacetime.image` (the real CLI) versus a minimal diffusers script "
        "(`tools/bench_scripts/diffusers_txt2img.py`: import, `from_pretrained`, DDIM, save). "
        "Phases come from instrumented runs of the same code (spacetime: one run of the CLI body with "
        "timestamps; diffusers: median over its runs); *import+load* counts from process launch.",
        "",
        "| contender | wall s | vs diffusers fp32 | clean / runs | import+load | of which import | text encode | sampling | VAE decode | save+exit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = p["median_s"]["diffusers fp32"]
    for name, s in p["median_s"].items():
        ph, sm = p["phases"][name], p["samples"][name]
        lines.append(
            f"| {name} | {fmt_s(s)} | {s / base:.2f}x | {sm['clean']} / {len(sm['runs'])} | "
            f"{fmt_s(ph['import_and_load'])} | "
            f"{fmt_s(ph['interpreter'] + ph['import'])} | {fmt_s(ph['text_encode'])} | "
            f"{fmt_s(ph['sampling'])} | {fmt_s(ph['vae_decode'])} | {fmt_s(ph['save'] + ph['exit'])} |"
        )
    ratio_auto = p["median_s"]["spacetime auto"] / base
    ratio_fp32 = p["median_s"]["spacetime fp32"] / base
    met = ratio_auto <= TARGET
    lines += [
        "",
        f"Bare start-up: `python -m spacetime.image --help` {fmt_s(p['startup_s']['spacetime --help'])} s; "
        f"`python -c 'from diffusers import StableDiffusionPipeline'` {fmt_s(p['startup_s']['diffusers import'])} s.",
        "",
        f"**Target (whole process <= {TARGET}x diffusers fp32): {'met' if met else 'not met'}** — "
        f"spacetime auto {ratio_auto:.2f}x, spacetime fp32 {ratio_fp32:.2f}x.",
        "",
        "### Output agreement (PNG, seed 0)",
        "",
        f"- spacetime fp32 vs diffusers fp32: {100 * img['fp32_within_3']:.2f}% of values within 3/255, "
        f"max abs diff {img['fp32_max_abs']}/255, PSNR {img['fp32_psnr']:.1f} dB.",
        f"- spacetime auto vs spacetime fp32: PSNR {img['auto_vs_fp32_psnr']:.1f} dB (max abs diff "
        f"{img['auto_vs_fp32_max_abs']}/255); diffusers bf16 autocast vs diffusers fp32: PSNR "
        f"{img['diffusers_bf16_vs_fp32_psnr']:.1f} dB.",
        f"- The reference image is not degenerate: mean {img['image_mean']:.0f}, std {img['image_std']:.0f}, "
        f"{100 * img['saturated_fraction']:.1f}% of values at 0 or 255.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Benchmark python -m spacetime.image against diffusers (per-step U-Net and "
        "whole-process time, output agreement) on a mid-size random-weight SD checkpoint.",
    )
    p.add_argument("--workdir", type=Path, default=Path("/tmp/spacetime-bench"),
                   help="where the checkpoint is cached and outputs/logs go (default /tmp/spacetime-bench)")  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                   help="markdown file whose section to write, or - to only print (default docs/benchmarks.md)")  # fmt: skip
    p.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    p.add_argument("--size", type=int, default=256, help="image height and width (default 256)")
    p.add_argument(
        "--repeats", type=int, default=3, help="whole-process runs per contender (default 3)"
    )
    p.add_argument(
        "--unet-repeats", type=int, default=7, help="timed U-Net calls per contender (default 7)"
    )
    p.add_argument(
        "--unet-warmup", type=int, default=2, help="untimed U-Net calls per contender (default 2)"
    )
    p.add_argument(
        "--max-contention",
        type=float,
        default=0.1,
        help="repeat a timed run if other processes used more than this share of the "
        "machine's CPU meanwhile (default 0.1)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="seconds to wait for a quiet machine before each process run (default 60)",
    )
    p.add_argument("--retries", type=int, default=2,
                   help="repeats of a disturbed process run (default 2)")  # fmt: skip
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached checkpoint")
    a = p.parse_args(argv)
    if a.size % 8 or a.size < 64:
        p.error(f"--size must be a multiple of 8 and >= 64, got {a.size}")
    if min(a.steps, a.repeats, a.unet_repeats, a.unet_warmup) < 1:
        p.error("--steps, --repeats, --unet-repeats and --unet-warmup must be >= 1")
    if not 0 < a.max_contention <= 1 or a.retries < 0 or a.quiet_wait < 0:
        p.error("--max-contention must be in (0, 1], --retries and --quiet-wait >= 0")

    a.workdir.mkdir(parents=True, exist_ok=True)
    command = "python tools/bench_image.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    loadavg_before = os.getloadavg()[0]
    model, info = build_checkpoint(a.workdir, a.rebuild)
    log(f"checkpoint {model}: U-Net {info['unet_params']:,} parameters, VAE {info['vae_params']:,}, "
        f"text encoder {info['text_params']:,}")  # fmt: skip
    results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}}
    results.update(command=command.strip(), model=info, machine=machine())
    log("per-step U-Net")
    results["unet"] = bench_unet(model, a.size, a.unet_warmup, a.unet_repeats, a.max_contention)
    for name, s in results["unet"]["median_s"].items():
        log(f"  {name}: {s:.3f} s/call")
    log("whole process")
    results["process"] = bench_processes(
        model, a.workdir, a.steps, a.size, a.repeats, a.max_contention, a.quiet_wait, a.retries
    )
    results["images"] = compare_images(results["process"]["images"])
    results["loadavg"] = (loadavg_before, os.getloadavg()[0])
    (a.workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    section = render(results)
    print(section)
    if a.out != "-":
        write_section(Path(a.out), section, SECTION)
        log(f"wrote the section to {a.out}")


if __name__ == "__main__":
    main()
