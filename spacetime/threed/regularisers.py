"""Regularisers of a rendered field: opacity entropy and sparsity (threestudio), and the
orientation loss (Ref-NeRF, Verbin et al. 2022; DreamFusion's normal regulariser)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from spacetime.threed.field import Field
from spacetime.threed.render import Render


@dataclass(frozen=True)
class RegularisersConfig:
    """Loss weights (0 turns a term off); added to the SDS loss, which sums over latents."""

    opacity_entropy: float = 1.0
    orientation: float = 10.0
    sparsity: float = 0.0
    smoothness: float = 0.0  # total variation of the finest grid level
    eikonal: float = 0.1  # "sdf" fields only


def opacity_entropy(opacity: Tensor, eps: float = 1e-5) -> Tensor:
    """Binary cross-entropy of accumulated opacity with itself, i.e. its entropy: 0 at 0 and 1,
    log 2 at 0.5, so pixels become either empty or solid (threestudio's lambda_opaque)."""
    o = opacity.clamp(eps, 1 - eps)
    return F.binary_cross_entropy(o, o)


def orientation(weights: Tensor, normals: Tensor, directions: Tensor) -> Tensor:
    """Ref-NeRF's orientation loss: sum over samples of w * max(0, n . d)^2, where d points away
    from the camera, so a visible normal facing away is penalised; mean over rays."""
    facing_away = (normals * directions[:, None]).sum(-1).clamp(min=0)
    return (weights.detach() * facing_away**2).sum(-1).mean()


def sparsity(opacity: Tensor) -> Tensor:
    """Mean accumulated opacity: L1 pressure towards empty space (threestudio's lambda_sparsity)."""
    return opacity.mean()


def total_variation(grid: Tensor) -> Tensor:
    """Mean squared difference between neighbouring voxels of a grid (c, z, y, x): a smoothness
    prior for dense grids (Plenoxels, DVGO), which have none of an MLP's."""
    dz = grid[:, 1:] - grid[:, :-1]
    dy = grid[:, :, 1:] - grid[:, :, :-1]
    dx = grid[..., 1:] - grid[..., :-1]
    return (dz**2).mean() + (dy**2).mean() + (dx**2).mean()


def regularisation(render: Render, field: Field, cfg: RegularisersConfig) -> Tensor:
    """The weighted sum of the enabled regularisers for one step's render of `field`."""
    total = render.opacity.new_zeros(())
    if cfg.opacity_entropy:
        total = total + cfg.opacity_entropy * opacity_entropy(render.opacity)
    if cfg.orientation:
        terms = orientation(render.weights, render.sample_normals, render.directions)
        total = total + cfg.orientation * terms
    if cfg.sparsity:
        total = total + cfg.sparsity * sparsity(render.opacity)
    if cfg.smoothness:
        total = total + cfg.smoothness * total_variation(field.grids[-1])
    if cfg.eikonal and field.config.kind == "sdf":
        total = total + cfg.eikonal * field.eikonal()
    return total
