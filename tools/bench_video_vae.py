#!/usr/bin/env python
"""Benchmark the video VAE's decoding memory: 64 frames against 8, as the video pipeline decodes.

Each (size, frames) case runs in a fresh subprocess: the default temporal decoder is loaded, the
kernel's peak-RSS counter is reset (`/proc/self/clear_refs` 5), random latents of a clip are
decoded to uint8 with the windows its config records (`VideoVAEConfig.decode_windows`), and the peak resident set
above the loaded process is reported. Target: 64 frames <= 1.5x 8 frames. Results replace the
"## Video VAE" section of docs/benchmarks.md.

    python tools/bench_video_vae.py [--sizes 64 256] [--out -]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from _shared import ROOT, log, machine, status_mb, write_section

SECTION = "## Video VAE"
TARGET = 1.5


def load(path: str | None):
    """The video VAE to measure: --vae, else the shipped one, else one freshly grown from the
    default image VAE (the same architecture, so the same memory)."""
    from spacetime.formats.load import default_model, load_components
    from spacetime.formats.video_vae import load_video_vae
    from spacetime.models.video_vae import VideoVAE

    folder = path or default_model("video-vae")
    if folder is not None:
        return load_video_vae(folder), str(folder)
    image = load_components(default_model("image")).vae
    fresh = VideoVAE.from_image_vae(image)
    fresh.config = dataclasses.replace(fresh.config, decode_window=8)  # as the recipe exports it
    return fresh, "a fresh VideoVAE.from_image_vae(default image VAE), 8-frame window"


def child(frames: int, size: int, path: str | None) -> None:
    """(In the subprocess.) Load, reset the peak counter, decode, print the JSON result."""
    import numpy as np
    import torch

    from spacetime.memory import large_blocks_returned
    from spacetime.pipelines.diffusion import to_uint8

    vae, what = load(path)
    vae = vae.float().eval()
    f = vae.config.downscale
    z = torch.randn(1, vae.config.latent_channels, frames, size // f, size // f,
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    loaded = status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    with torch.no_grad(), large_blocks_returned():  # as the pipelines decode
        pixels = to_uint8(vae.decode(z, **vae.config.decode_windows(frames)))
    peak = status_mb("VmHWM")
    print(json.dumps({"frames": frames, "size": size, "shape": list(pixels.shape),
                      "decode_mb": peak - loaded, "checksum": int(np.asarray(pixels).sum() % 997),
                      "windows": vae.config.decode_windows(frames), "vae": what}))  # fmt: skip


def run_case(frames: int, size: int, path: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(frames), str(size)]
    cmd += ["--vae", path] if path else []
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"decode of {frames} frames at {size} px failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(results: dict) -> str:
    m = results["machine"]
    rows = "\n".join(
        f"| {r['size']}×{r['size']} | {r['short']['decode_mb']:.0f} MiB | "
        f"{r['long']['decode_mb']:.0f} MiB | {r['ratio']:.2f}× |"
        for r in results["cases"]
    )
    return f"""{SECTION}

`{results["command"]}` — {m.get("cpu", "?")}, torch {m.get("torch", "?")}.

Decoding random latents of a clip to uint8 with {results["cases"][0]["short"]["vae"]}, as the
video pipeline does (`VideoVAEConfig.decode_windows`, `to_uint8`): clips longer than 8 frames decode in windows that keep 4 frames and see 2 more
on each side (crossfaded). Memory is the peak resident set above the loaded process (the kernel's
peak counter reset after loading), each case in a fresh process, fp32, with glibc returning large
blocks to the OS while decoding, as the pipelines decode (`spacetime/memory.py`). Target: 64 frames ≤ {TARGET}×
8 frames.

| output size | 8 frames | 64 frames | ratio |
|---|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256],
                   help="output sizes in pixels (default 64 256)")  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                   help="markdown file whose section to write, or - to only print")  # fmt: skip
    p.add_argument("--vae", default=None,
                   help="video VAE folder (default: the shipped one, else a fresh one grown from "
                   "the default image VAE: memory depends on the architecture, not the weights)")  # fmt: skip
    p.add_argument("--child", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child is not None:
        child(*a.child, a.vae)
        return
    cases = []
    for size in a.sizes:
        short, long = run_case(8, size, a.vae), run_case(64, size, a.vae)
        ratio = long["decode_mb"] / short["decode_mb"]
        log(f"{size} px: 8 frames {short['decode_mb']:.0f} MiB, 64 frames "
            f"{long['decode_mb']:.0f} MiB, ratio {ratio:.2f}")  # fmt: skip
        cases.append({"size": size, "short": short, "long": long, "ratio": ratio})
    command = "python tools/bench_video_vae.py " + " ".join(sys.argv[1:] if argv is None else argv)
    section = render({"cases": cases, "machine": machine(), "command": command.strip()})
    print(section)
    if a.out != "-":
        write_section(Path(a.out), section, SECTION)


if __name__ == "__main__":
    main()
