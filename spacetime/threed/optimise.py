"""The score-distillation loop: render the field, ask the guidance, step Adam (DreamFusion)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from spacetime.errors import SpacetimeError
from spacetime.threed import DEFAULT_STEPS
from spacetime.threed.field import Field, FieldConfig
from spacetime.threed.guidance import Guidance
from spacetime.threed.regularisers import RegularisersConfig, regularisation
from spacetime.threed.render import WORLD_BACKGROUND, ShadingConfig, render, sample_shading


@dataclass(frozen=True)
class OptimiseConfig:
    """Everything the loop decides besides the guidance model."""

    steps: int = DEFAULT_STEPS
    lr: float = 0.01  # of the coarsest level, in world units for "sdf" fields ("density": ~0.1)
    level_lr_decay: float = 0.5  # each finer level's lr is this times the next coarser one's
    seed: int = 0
    resolution: int = 64  # render size, pixels per side
    samples: int = 48  # points per ray across the unit ball
    random_background: bool = False  # else the world's default background, as the world renders
    grid: FieldConfig = field(default_factory=FieldConfig)
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    regularisers: RegularisersConfig = field(default_factory=RegularisersConfig)

    def __post_init__(self):
        if self.steps < 1:
            raise SpacetimeError(f"steps must be >= 1, got {self.steps}")
        if self.lr <= 0:
            raise SpacetimeError(f"lr must be > 0, got {self.lr}")
        if self.resolution < 8:
            raise SpacetimeError(f"render resolution must be >= 8, got {self.resolution}")
        if self.samples < 2:
            raise SpacetimeError(f"samples must be >= 2, got {self.samples}")


@dataclass(frozen=True)
class Progress:
    """Reported after every step: 1-based step, total, and the step's loss (nan if skipped)."""

    step: int
    steps: int
    loss: float
    skipped: int  # steps skipped so far for a non-finite gradient


def optimise(
    guidance: Guidance,
    cfg: OptimiseConfig = OptimiseConfig(),
    progress: Callable[[Progress], None] | None = None,
    start: Field | None = None,
) -> Field:
    """Fit a field to the guidance's prompt with Adam; the same seed gives the same field.
    `start`: a field to refine (the fast path's reconstruction) instead of the initial sphere;
    its grid configuration must be `cfg.grid`."""
    generator = torch.Generator("cpu").manual_seed(cfg.seed)
    device = guidance.device
    if start is not None and start.config != cfg.grid:
        raise SpacetimeError(f"the starting field is {start.config}, the run's grid {cfg.grid}")
    model = (Field(cfg.grid) if start is None else start).to(device).train()
    # eps 1e-15 as threestudio: SDS gradients on far-away voxels are tiny but still informative.
    # Finer levels learn slower: a coarse voxel pools the gradients of many pixels and moves
    # consistently, while Adam turns a fine voxel's noisy gradient into full-size random steps.
    levels = len(model.grids)
    groups = [
        {"params": [grid], "lr": cfg.lr * cfg.level_lr_decay ** (levels - 1 - i)}
        for i, grid in enumerate(model.grids)
    ]
    optimiser = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)
    skipped = 0
    for step in range(cfg.steps):
        cameras = guidance.sample_cameras(generator)
        shading = sample_shading(generator, cfg.shading, cameras[0])
        background = (
            tuple(torch.rand(3, generator=generator).tolist())
            if cfg.random_background
            else WORLD_BACKGROUND
        )
        out = render(model, cameras, cfg.resolution, cfg.samples, shading, background, generator)
        result = guidance(out.rgb, cameras, step, cfg.steps, generator)
        loss = float("nan")
        if result.loss is None:
            skipped += 1
        else:
            total = result.loss + regularisation(out, model, cfg.regularisers)
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            loss = float(total.detach())
        if progress is not None:
            progress(Progress(step + 1, cfg.steps, loss, skipped))
    if skipped == cfg.steps:
        raise SpacetimeError(
            f"all {cfg.steps} steps gave non-finite guidance gradients; the field was not trained"
        )
    return model.eval()
