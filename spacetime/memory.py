"""Process-level memory behaviour for long clips."""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


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
