"""Sliding context windows over frames, for clips longer than the motion modules can attend over.

AnimateDiff's motion modules know a fixed number of frame positions (16 in training, 24 or 32 in
their position tables). Following FreeNoise (Qiu et al. 2023) and AnimateDiff-Evolved's context
windows, a long clip is denoised as overlapping windows of `frames` frames: each network call runs
once per window and the per-frame predictions are averaged with weights that taper towards each
window's ends, so neighbouring windows cross-fade instead of meeting at a seam. The wrapper sits
around the network function, below guidance and the sampler, so every sampler works unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from spacetime.errors import SpacetimeError
from spacetime.windows import Span, pyramid, spread

DEFAULT_FRAMES = 16  # AnimateDiff's training clip length
# (x_t (b, c, t, h, w), timestep, context, frames) -> like x_t; `frames`, a keyword: which frames
# of the whole clip x_t holds (per-frame conditions such as control images follow them)
Net = Callable[..., Tensor]


@dataclass(frozen=True)
class ContextWindows:
    """Windows of `frames` frames; neighbours share at least `overlap` frames."""

    frames: int = DEFAULT_FRAMES
    overlap: int = DEFAULT_FRAMES // 4

    def __post_init__(self):
        if self.frames < 1:
            raise SpacetimeError(f"context_frames must be >= 1, got {self.frames}")
        if not 0 <= self.overlap < self.frames:
            raise SpacetimeError(
                f"context_overlap must be >= 0 and smaller than context_frames={self.frames}, "
                f"got {self.overlap}"
            )

    def spans(self, total: int) -> list[Span]:
        """[lo, hi) of each window over a clip of `total` frames (spacetime.windows.spread)."""
        return spread(total, self.frames, self.overlap)

    def starts(self, total: int) -> list[int]:
        """First frame of each window."""
        return [lo for lo, _ in self.spans(total)]

    def weights(self) -> Tensor:
        """FreeNoise's pyramid weights: where windows overlap, normalising by the summed weights
        turns them into a linear crossfade; elsewhere the one window counts fully."""
        return pyramid(self.frames)


def windowed(net: Net, windows: ContextWindows) -> Net:
    """`net` over overlapping frame windows, blended: sum_w weight_w·net(x_w) / sum_w weight_w.
    Clips of at most `windows.frames` frames take the plain call, so short clips are unchanged."""
    weight = windows.weights()

    def run(x_t: Tensor, timestep: Tensor, context: Tensor) -> Tensor:
        total = x_t.shape[2]
        if total <= windows.frames:
            return net(x_t, timestep, context)
        # Accumulate weighted predictions and their weights, then divide, as FreeNoise does.
        out = norm = None
        for lo, hi in windows.spans(total):
            # a per-frame context (b, t, n, d), as prompt travel gives, follows its frames
            window = context[:, lo:hi] if context is not None and context.ndim == 4 else context
            # and per-frame timesteps (b, t), as a first frame given clean gives
            t = timestep[:, lo:hi] if torch.is_tensor(timestep) and timestep.ndim == 2 else timestep
            pred = net(x_t[:, :, lo:hi], t, window, frames=slice(lo, hi))  # (b, c, window, h, w)
            w = weight.to(pred.device, pred.dtype)
            if out is None:
                out = pred.new_zeros((*pred.shape[:2], total, *pred.shape[3:]))
                norm = pred.new_zeros(total)
            out[:, :, lo:hi] += pred * rearrange(w, "t -> t 1 1")
            norm[lo:hi] += w
        return out / rearrange(norm, "t -> t 1 1")

    return run
