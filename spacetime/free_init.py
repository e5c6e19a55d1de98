"""FreeInit (Wu et al. 2023): resample a clip from its own low spatio-temporal frequencies.

Training noise x_T = √ᾱ_T x0 + √(1-ᾱ_T) ε still carries x0's low frequencies (ᾱ_T > 0), so a
model learns to read layout and colour from them; pure Gaussian noise at inference has none, which
lets each frame pick its own. FreeInit samples once, diffuses the result back to t = T with the
first noise, keeps its low frequencies (a 3D low-pass filter over frames, height and width) and
takes the high ones from fresh noise, then samples again. Same filters and defaults as diffusers'
`enable_free_init`, which follows the paper's code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from spacetime import checks
from spacetime.sampling import add_noise

# One sampling run: unit-variance initial noise and a step count → clean latents (network space).
SamplePass = Callable[[Tensor, int], Tensor]

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
        checks.integer("FreeInit iterations", self.iterations, 1)
        checks.choice("FreeInit method", self.method, METHODS)
        checks.integer("FreeInit order", self.order, 1)
        checks.flag("FreeInit fast", self.fast)
        for name in ("spatial_stop", "temporal_stop"):
            checks.number(f"FreeInit {name}", getattr(self, name), 0, 1)

    def steps(self, steps: int, iteration: int) -> int:
        """Sampler steps of pass `iteration` (0-based) for a request of `steps`."""
        if not self.fast:
            return steps
        return max(1, int(steps / self.iterations * (iteration + 1)))

    def total_steps(self, steps: int) -> int:
        """Sampler steps over all passes."""
        return sum(self.steps(steps, i) for i in range(self.iterations))

    def wrap(
        self, sample_pass: SamplePass, abar_last: Tensor, generator: torch.Generator
    ) -> SamplePass:
        """`sample_pass` run `iterations` times, as a sampler runs a denoiser: each pass after the
        first starts from the last clip diffused to t = T with the first noise, its low
        frequencies kept and its high ones drawn fresh from `generator` (CPU, after the first
        noise, as diffusers draws them). Restarts mix unit-variance noise and the pass scales it
        as it scales the first; diffusers mixes the first noise already scaled by
        init_noise_sigma with unscaled fresh noise, the same for ddim/ddpm/dpm++ (sigma 1) but not
        for euler/euler-a."""

        def run(noise: Tensor, steps: int) -> Tensor:
            latents = sample_pass(noise, self.steps(steps, 0))
            low_pass = self.low_pass(*noise.shape[-3:]).to(noise.device)
            for i in range(1, self.iterations):
                diffused = add_noise(latents, noise, abar_last)
                fresh = torch.randn(noise.shape, generator=generator).to(noise.device)
                restart = mix_frequencies(diffused, fresh, low_pass)
                latents = sample_pass(restart, self.steps(steps, i))
            return latents

        return run

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
