#!/usr/bin/env python
"""Benchmark LoRA (spacetime.models.lora): U-Net step time with adapters, and loading a file.

One random-weight SD 1.x-shaped U-Net (`_shared.SD_MID_UNET`, ~142M parameters), laid out as the
pipelines run it (weights cast once to the precision, channels-last), with four random adapters
loaded once from files in the PEFT/diffusers layout: two of rank 8 and two of rank 64 on every
layer of the spatial transformers (attention q/k/v/out, feed-forward, proj_in/out; what kohya's
default LoRA trains). Each case is the same U-Net with other adapter weights (`set_weights`, no
reload) or fused; the cases alternate every round so they share the machine's conditions, and
each is reported as a ratio to the plain U-Net measured in the same run. Also measured: reading
and attaching one rank-64 file, the way `pipe.load_lora` does. Results replace the "## LoRA"
section of docs/benchmarks.md.

    python tools/bench_lora.py [--size 256] [--repeats 7] [--out -]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _shared import ROOT, SD_MID_UNET, Samples, log, machine, timed, write_section

SECTION = "## LoRA"
RANKS = (8, 64)


def write_lora(path: Path, unet, rank: int, seed: int) -> Path:
    """A random PEFT/diffusers-layout LoRA for the U-Net's spatial-transformer layers."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, m in unet.named_modules():
        if ".attentions." in name and isinstance(m, torch.nn.Linear | torch.nn.Conv2d):
            shape = m.weight.shape
            sd[f"unet.{name}.lora_A.weight"] = torch.randn((rank, *shape[1:]), generator=g) * 0.01
            ones = (1,) * (len(shape) - 2)
            sd[f"unet.{name}.lora_B.weight"] = (
                torch.randn((shape[0], rank, *ones), generator=g) * 0.01
            )
    save_file(sd, str(path))
    return path


def cases() -> dict[str, tuple[dict[str, float], bool]]:
    """Case name → (adapter weights, fused)."""
    out: dict[str, tuple[dict[str, float], bool]] = {"plain U-Net": ({}, False)}
    for r in RANKS:
        out[f"1 adapter, rank {r}"] = ({f"r{r}a": 1.0}, False)
        out[f"2 adapters, rank {r}"] = ({f"r{r}a": 0.8, f"r{r}b": 0.6}, False)
        out[f"2 adapters, rank {r}, fused"] = ({f"r{r}a": 0.8, f"r{r}b": 0.6}, True)
    return out


def bench(size: int, repeats: int, precision: str, max_share: float) -> dict:
    import torch

    from spacetime.formats.lora import read_lora
    from spacetime.models.lora import Adapters
    from spacetime.models.unet import UNet2DCondition, UNetConfig
    from spacetime.precision import DTYPES, resolve_precision

    precision = resolve_precision(precision, "cpu")
    dtype = DTYPES[precision]
    torch.manual_seed(0)
    unet = UNet2DCondition(UNetConfig.from_diffusers(SD_MID_UNET)).eval()
    unet.to(dtype=dtype, memory_format=torch.channels_last)  # as the pipelines hold it
    adapters = Adapters({"unet": unet})
    names = adapters.layer_names()
    g = torch.Generator().manual_seed(1)
    lat = size // 8
    x = torch.randn(1, 4, lat, lat, generator=g).repeat(2, 1, 1, 1).to(dtype)  # CFG: twice
    x = x.contiguous(memory_format=torch.channels_last)
    context = torch.randn(2, 77, SD_MID_UNET["cross_attention_dim"], generator=g).to(dtype)
    t = torch.tensor(501)

    with tempfile.TemporaryDirectory() as tmp:
        files = {
            f"r{r}{ab}": write_lora(Path(tmp) / f"r{r}{ab}.safetensors", unet, r, seed)
            for seed, (r, ab) in enumerate((r, ab) for r in RANKS for ab in "ab")
        }
        sizes_mb = {name: path.stat().st_size / 1e6 for name, path in files.items()}
        loads = []
        for _ in range(3):  # what pipe.load_lora does: read, rename, check, attach
            start = time.perf_counter()
            factors = read_lora(files["r64a"], names)
            adapters.add("timed", factors)
            loads.append(time.perf_counter() - start)
            adapters.remove("timed")
        for name, path in files.items():
            adapters.add(name, read_lora(path, names), weight=0.0)

    all_off = dict.fromkeys(adapters.weights, 0.0)
    switches, fuses = [], []

    def select(weights: dict[str, float], fused: bool) -> None:
        adapters.unfuse()
        start = time.perf_counter()
        adapters.set_weights({**all_off, **weights})
        switches.append(time.perf_counter() - start)
        if fused:
            start = time.perf_counter()
            adapters.fuse()
            fuses.append(time.perf_counter() - start)

    def step():
        with torch.no_grad():
            return unet(x, t, context)

    plan = cases()
    samples = {name: Samples(max_share) for name in plan}
    outputs = {}
    for name, (weights, fused) in plan.items():  # warm-up, and each case's output once
        select(weights, fused)
        outputs[name] = step().float()
    order = list(plan)
    for r in range(3 * repeats):
        if all(len(s.clean) >= repeats for s in samples.values()):
            break
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate the order
            select(*plan[name])
            _, wall, share = timed(step)
            samples[name].add(wall, share)
        log(f"round {r + 1}: " + ", ".join(f"{n} {s.median():.3f}" for n, s in samples.items()))
    plain = samples["plain U-Net"].median()
    fused_gap = {
        r: (outputs[f"2 adapters, rank {r}, fused"] - outputs[f"2 adapters, rank {r}"]).abs().max()
        for r in RANKS
    }
    return {
        "precision": precision,
        "size": size,
        "parameters": sum(p.numel() for p in unet.parameters()),
        "layers": len(factors),
        "median_s": {n: s.median() for n, s in samples.items()},
        "ratio": {n: s.median() / plain for n, s in samples.items()},
        "clean": {n: (len(s.clean), len(s.runs)) for n, s in samples.items()},
        "load_s": statistics.median(loads),
        "file_mb": sizes_mb["r64a"],
        "switch_ms": 1000 * statistics.median(switches),
        "fuse_ms": 1000 * statistics.median(fuses),
        "fused_vs_unfused_max_abs": {r: float(v) for r, v in fused_gap.items()},
        "lora_effect_max_abs": float(
            (outputs["2 adapters, rank 64"] - outputs["plain U-Net"]).abs().max()
        ),
    }


def render(res: dict, command: str) -> str:
    m = res["machine"]
    rows = "\n".join(
        f"| {name} | {res['median_s'][name]:.3f} | {res['ratio'][name]:.2f}x | "
        f"{res['clean'][name][0]} / {res['clean'][name][1]} |"
        for name in res["median_s"]
    )
    gaps = ", ".join(f"rank {r}: {v:.1e}" for r, v in res["fused_vs_unfused_max_abs"].items())
    return f"""{SECTION}

Measured by `{command}` on {m["date"]}: {m["cpu"]} ({", ".join(m["isa"]) or "no avx512"}),
{m["cores"]} cores, {m["torch_threads"]} torch threads; torch {m["torch"]}. Load average at
start / end: {res["load"][0]:.1f} / {res["load"][1]:.1f}. {res["note"]}

A random-weight SD 1.x-shaped U-Net ({res["parameters"]:,} parameters, `_shared.SD_MID_UNET`)
held as the pipelines hold it ({res["precision"]} weights, channels-last), one call at batch 2
(classifier-free guidance) on {res["size"] // 8}x{res["size"] // 8} latents ({res["size"]} px).
Adapters are random PEFT/diffusers-layout files on all {res["layers"]} layers of the spatial
transformers (q/k/v/out, feed-forward, proj_in/out), loaded once; a case only changes their weights
(`set_lora_weights`) or fuses them. Cases alternate every round; a *clean* call is one during which
other processes used at most {int(res["max_share"] * 100)}% of the CPU.

| case | s / call (median) | vs plain U-Net | clean / timed calls |
|---|---:|---:|---:|
{rows}

- Loading a rank-64 LoRA ({res["file_mb"]:.1f} MB safetensors) as `pipe.load_lora` does (read,
  rename, check every layer, attach): {res["load_s"]:.3f} s (median of 3).
- Changing adapter weights (`set_lora_weights`, unfused): {res["switch_ms"]:.1f} ms; fusing two
  adapters into their {res["layers"]} layers: {res["fuse_ms"]:.0f} ms (medians).
- Fused minus unfused output, max abs: {gaps} (output changed by the adapters by up to
  {res["lora_effect_max_abs"]:.2f}).
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    p.add_argument("--repeats", type=int, default=7, help="clean calls per case (default 7)")
    p.add_argument("--precision", default="auto", help="fp32, bf16 or auto (the pipelines')")
    p.add_argument("--max-contention", type=float, default=0.1,
                   help="largest share of the CPU others may use during a clean call")  # fmt: skip
    p.add_argument("--note", default="", help="a remark for the section (e.g. a busy machine)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                   help="markdown file whose section to write, or - to only print")  # fmt: skip
    a = p.parse_args(argv)
    start_load = os.getloadavg()[0]
    res = bench(a.size, a.repeats, a.precision, a.max_contention)
    load = (start_load, os.getloadavg()[0])
    res.update(machine=machine(), max_share=a.max_contention, note=a.note, load=load)
    command = "python tools/bench_lora.py " + " ".join(sys.argv[1:] if argv is None else argv)
    section = render(res, command.strip())
    print(section)
    if a.out != "-":
        write_section(Path(a.out), section, SECTION)


if __name__ == "__main__":
    main()
