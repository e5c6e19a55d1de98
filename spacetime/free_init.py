"""FreeInit (Wu et al. 2023): resample a clip from its own low spatio-temporal frequencies.

Training noise x_T = √ᾱ_T x0 + √(1-ᾱ_T) ε still carries x0's low frequencies (ᾱ_T > 0), so a
model learns to read layout and colour from them; pure Gaussian noise at inference has none, which
lets each frame pick its own. FreeInit samples once, diffuses the result back to t = T with the
first noise, keeps its low frequencies (a 3D low-pass filter over frames, height and width) and
takes the high ones from fresh noise, then samples again. Same filters and defaults as diffusers'
`enable_free_init`, which follows the paper's code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from spacetime.errors import SpacetimeError

METHODS = ("butterworth", "gaussian", "ideal")


@dataclass(frozen=True)
class FreeInit:
    """How many sampling passes and which low-pass filter; validated on construction."""

    iterations: int = 3  # sampling passes, the first from plain noise
    method: str = "butterworth"
    order: int = 4  # butterworth order: high → ideal, low → gaussian
    spatial_stop: float = 0.25  # normalised stop frequency over height and width (paper's d_s)
    temporal_stop: float = 0.25  # over frames (d_t)
    # Coarse-to-fine: pass i of n takes steps·(i+1)/n steps, so only the last pays full price.
    fast: bool = False

    def __post_init__(self):
        if self.iterations < 1:
            raise SpacetimeError(f"FreeInit iterations must be >= 1, got {self.iterations}")
        if self.method not in METHODS:
            raise SpacetimeError(
                f"FreeInit method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        for name in ("spatial_stop", "temporal_stop"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise SpacetimeError(f"FreeInit {name} must be in [0, 1], got {value}")

    def steps(self, steps: int, iteration: int) -> int:
        """Sampler steps of pass `iteration` (0-based) for a request of `steps`."""
        if not self.fast:
            return steps
        return max(1, int(steps / self.iterations * (iteration + 1)))

    def low_pass(self, frames: int, height: int, width: int) -> Tensor:
        """(t, h, w) float32 gain for fftshift-ed frequencies, 1 at the centre (zero frequency)."""
        if self.spatial_stop == 0 or self.temporal_stop == 0:
            return torch.zeros(frames, height, width)

        def axis(n: int) -> Tensor:  # shifted frequency index → [-1, 1), zero at n // 2
            return 2 * torch.arange(n, dtype=torch.float64) / n - 1

        t = (self.spatial_stop / self.temporal_stop * axis(frames))[:, None, None]
        d2 = t**2 + axis(height)[None, :, None] ** 2 + axis(width)[None, None, :] ** 2
        stop = self.spatial_stop
        if self.method == "butterworth":
            gain = 1 / (1 + (d2 / stop**2) ** self.order)
        elif self.method == "gaussian":
            gain = torch.exp(-d2 / (2 * stop**2))
        else:  # ideal; the paper's code compares d² with 2·d_s, which diffusers keeps
            gain = (d2 <= stop * 2).double()
        return gain.float()


def mix_frequencies(low: Tensor, high: Tensor, low_pass: Tensor) -> Tensor:
    """`low`'s low frequencies and `high`'s high ones over the last three axes (t, h, w)."""
    axes = (-3, -2, -1)
    spectrum = lambda x: torch.fft.fftshift(torch.fft.fftn(x, dim=axes), dim=axes)  # noqa: E731
    mixed = spectrum(low) * low_pass + spectrum(high) * (1 - low_pass)
    return torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=axes), dim=axes).real
