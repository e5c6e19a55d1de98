"""Score Distillation Sampling (DreamFusion, Poole et al. 2022): the math, free of any model.

grad = w(t) (eps_hat(z_t; y, t) - eps) with z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps, and no
gradient through the denoiser. It enters autograd as a loss whose gradient w.r.t. z is exactly grad.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from spacetime.errors import SpacetimeError
from spacetime.sampling import add_noise

WEIGHTINGS = ("sds", "uniform", "sigma")
ANNEALING = ("none", "linear", "sqrt")


@dataclass(frozen=True)
class SDSConfig:
    """Guidance scale, timestep weighting and range, how the range anneals, and x0 rescaling.

    t_min, t_max, t_max_end, t_min_end are fractions of the training timesteps. Annealing the range
    down over the run (threestudio's min/max_step_percent, DreamTime) settles coarse shape first,
    detail last; it reaches its end values after `anneal_until` of the run. `rescale` blends the
    guided x0 towards the conditional prediction's spread (threestudio's MVDream
    recon_std_rescale), which keeps large guidance scales from oversaturating."""

    guidance: float = 50.0  # MVDream's scale; DreamFusion used 100 with a single-view model
    weighting: str = "sds"
    t_min: float = 0.02
    t_max: float = 0.98
    t_max_end: float = 0.5  # t_max at the end of the annealing (unused with anneal="none")
    anneal: str = "linear"
    t_min_end: float | None = None  # t_min at the end of the annealing; None: t_min throughout
    anneal_until: float = 1.0  # fraction of the run after which the range stays at its end
    rescale: float = 0.0  # 0: plain guided x0; 1: rescaled to the conditional x0's std

    def __post_init__(self):
        if self.guidance < 0:
            raise SpacetimeError(f"guidance must be >= 0, got {self.guidance}")
        if self.weighting not in WEIGHTINGS:
            raise SpacetimeError(
                f"unknown weighting {self.weighting!r}; expected one of {WEIGHTINGS}"
            )
        if self.anneal not in ANNEALING:
            raise SpacetimeError(f"unknown annealing {self.anneal!r}; expected one of {ANNEALING}")
        t_min_end = self.t_min if self.t_min_end is None else self.t_min_end
        if not (0 <= self.t_min <= self.t_max <= 1 and 0 <= t_min_end <= self.t_max_end <= 1):
            raise SpacetimeError(
                "timestep fractions need 0 <= t_min <= t_max <= 1 and 0 <= t_min_end <= "
                f"t_max_end <= 1, got t_min={self.t_min}, t_max={self.t_max}, "
                f"t_min_end={t_min_end}, t_max_end={self.t_max_end}"
            )
        if not 0 < self.anneal_until <= 1:
            raise SpacetimeError(f"anneal_until must be in (0, 1], got {self.anneal_until}")
        if not 0 <= self.rescale <= 1:
            raise SpacetimeError(f"rescale must be in [0, 1], got {self.rescale}")


def timestep_range(cfg: SDSConfig, step: int, steps: int, train_timesteps: int) -> tuple[int, int]:
    """Integer timesteps [lo, hi] to draw from at `step` of `steps` (0-based): both ends move to
    their end values linearly in the run's progress, or as its square root (faster early),
    reaching them after `anneal_until` of the run (threestudio's (start, end) step schedules)."""
    progress = min(step / max(steps - 1, 1) / cfg.anneal_until, 1.0)
    if cfg.anneal == "sqrt":
        progress = progress**0.5
    if cfg.anneal == "none":
        progress = 0.0
    bottom = (
        cfg.t_min if cfg.t_min_end is None else cfg.t_min + (cfg.t_min_end - cfg.t_min) * progress
    )
    top = cfg.t_max + (cfg.t_max_end - cfg.t_max) * progress
    last = train_timesteps - 1
    lo = round(bottom * last)
    return lo, max(lo, round(top * last))


def weight(abar: Tensor, weighting: str) -> Tensor:
    """w(t): "sds" 1 - abar (DreamFusion), "uniform" 1, "sigma" sqrt((1 - abar) / abar), which
    makes SDS the x0-space loss 1/2 |z - x0_hat|^2 that MVDream trains with."""
    if weighting == "sds":
        return 1 - abar
    if weighting == "uniform":
        return torch.ones_like(abar)
    if weighting == "sigma":
        return ((1 - abar) / abar).sqrt()
    raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")


def sds_gradient(
    predict_noise: Callable[[Tensor], Tensor],
    latents: Tensor,
    abar: Tensor,
    weighting: str,
    generator: torch.Generator | None = None,
) -> Tensor:
    """w(t) (eps_hat - eps) for clean `latents` at noise level abar = abar_t (DreamFusion eq. 3);
    `predict_noise(z_t)` is the guided noise prediction at that timestep."""
    noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(latents.device)
    with torch.no_grad():
        z_t = add_noise(latents.detach(), noise, abar)
        return weight(abar, weighting) * (predict_noise(z_t) - noise)


def sds_loss(latents: Tensor, grad: Tensor) -> Tensor:
    """A loss whose gradient w.r.t. the latents is exactly `grad` and whose value is threestudio's
    1/2 |z - sg(z - grad)|^2 = 1/2 |grad|^2. Written as <z, sg(grad)> plus a constant: the
    textbook form's z - (z - grad) rounds, this one's backward multiplies grad by exactly 1."""
    grad = grad.detach()
    linear = (latents * grad).sum()
    return linear - linear.detach() + 0.5 * (grad**2).sum()
