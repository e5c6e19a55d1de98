"""Process-level memory behaviour for long clips."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from pathlib import Path

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


FAST_THRESHOLD = 32 << 20  # glibc's largest fixed mmap threshold


def return_large_blocks(threshold: int = 1 << 17) -> bool:
    """Ask glibc to serve every allocation of `threshold` bytes or more by mmap, so freeing it
    hands the pages back to the OS at once.

    By default glibc raises that threshold as large blocks are freed and then keeps later ones in
    its heap, which fragments: decoding a 64-frame clip window by window left the resident set
    at 1.75x that of an 8-frame clip although the live tensors never exceed one window (measured
    by tools/bench_video_vae.py; 1.22x with this). Returns whether it applied (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))


@contextlib.contextmanager
def large_blocks_returned():
    """Within: `return_large_blocks()` (the VAE decode of a long clip keeps one window's memory).
    After: a 32 MiB threshold, for speed. A block served by mmap is zero-filled page by page when
    first touched, and at 128 KiB for the whole run sampling was 25-40% slower (tools/
    profile_video.py, docs/benchmarks.md), while the decode barely changes."""
    return_large_blocks()
    try:
        yield
    finally:
        return_large_blocks(FAST_THRESHOLD)


def available_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, capped by a cgroup (container) limit;
    None where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


# Frames that pass through the networks at once: the U-Net's context window and the VAE's decode
# chunk (spacetime.context.DEFAULT_FRAMES, pipelines.diffusion.DECODE_CHUNK).
WINDOW_FRAMES, DECODE_FRAMES = 16, 8


def generation_bytes(
    height: int, width: int, frames: int, batch: int, vae_width: int, unet_width: int
) -> int:
    """A lower bound on the peak memory of sampling and decoding `batch` clips (fp32): the
    widest decoder activation (in and out) for the frames decoded at once, the U-Net's first
    level for both guidance branches of one window, and what the whole clip holds throughout
    (uint8 pixels, a few latent copies). Real use is a few times this; the bound only has to
    catch sizes that cannot fit."""
    pixels, latents = height * width, height * width // 64
    decode = batch * min(frames, DECODE_FRAMES) * pixels * vae_width * 4 * 2
    unet = 2 * batch * min(frames, WINDOW_FRAMES) * latents * unet_width * 4 * 2
    held = batch * frames * (pixels * 3 + latents * 4 * 4 * 4)
    return decode + unet + held
