"""Prompt travel: one text embedding per frame from prompts at key frames.

As diffusers' FreeNoise (Qiu et al. 2023) does it: the last key frame's prompt is carried to the
clip's last frame, and between consecutive key frames a and b frame f gets
(1 − α)·e_a + α·e_b with α = (f − a) / (b − a).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def travel(embeddings: Tensor, key_frames: Sequence[int], frames: int) -> Tensor:
    """(k, n, d) embeddings of the prompts at increasing key frames (the first 0, all below
    `frames`) -> (frames, n, d), one per frame."""
    keys = [*key_frames, frames - 1]
    embeddings = torch.cat([embeddings, embeddings[-1:]])  # the last prompt holds to the end
    out = embeddings.new_zeros((frames, *embeddings.shape[1:]))
    for i, (a, b) in enumerate(zip(keys[:-1], keys[1:], strict=True)):
        if a == b:  # a key frame at the last frame: nothing left to interpolate
            out[a] = embeddings[i]
            continue
        for f in range(a, b + 1):
            alpha = (f - a) / (b - a)
            out[f] = (1 - alpha) * embeddings[i] + alpha * embeddings[i + 1]
    return out
