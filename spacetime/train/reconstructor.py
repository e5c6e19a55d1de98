"""Training the fast path's reconstructor: four views → the primitive's truncated signed distance
and albedo, supervised by the world's ground truth (it knows every primitive's SDF and colour).

The inputs mix the world's own renders with sets the multi-view model generated for the training
split's prompts: at run time the reconstructor reads the model's sets, whose views may disagree,
and the renders alone never show it that. Held-out colour × solid pairs are in neither.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.formats.weights import atomic_write
from spacetime.threed.field import lattice_points
from spacetime.threed.reconstruct import (
    FAST_GUIDANCE,
    FAST_STEPS,
    Reconstructor,
    ReconstructorConfig,
    save_reconstructor,
)
from spacetime.train.common import rank_slice
from spacetime.train.config import ReconstructorTraining
from spacetime.train.multiview import (
    ViewCache,
    ViewGrid,
    cache_root,
    render_view_sets,
    sample_view_sets,
)
from spacetime.world.palette import COLOURS, SOLIDS
from spacetime.world.primitives import HELDOUT_PRIMITIVES, Primitive


def training_primitives() -> list[Primitive]:
    """Every colour × solid of the training split (the held-out pairs left out)."""
    return [
        Primitive(shape, colour)
        for colour in COLOURS
        for shape in SOLIDS
        if (colour, shape) not in HELDOUT_PRIMITIVES
    ]


class ReconstructionLoss(nn.Module):
    """L1 on the truncated signed distance (in units of the truncation) plus the albedo's binary
    cross-entropy against the primitive's colour over the whole colour lattice."""

    def __init__(self, model: Reconstructor):
        super().__init__()
        self.model = model

    def forward(self, views: Tensor, sdf: Tensor, colour: Tensor) -> Tensor:
        pred_sdf, logits = self.model(views)
        shape = F.l1_loss(pred_sdf, sdf) / self.model.config.truncation
        target = colour[:, :, None, None, None].expand_as(logits)
        return shape + F.binary_cross_entropy_with_logits(logits, target)


def generated_sets(cfg: ReconstructorTraining) -> tuple[np.ndarray, list[Primitive]]:
    """uint8 (n, 4, h, w, 3) sets the multi-view model made for the training prompts at its
    default cameras, and the primitive each shows; made once, cached on disk by model and
    settings."""
    from spacetime.formats.load import resolve
    from spacetime.formats.weights import find_weights

    model = Path(resolve(cfg.multiview))
    digest = hashlib.sha256()
    for weights in find_weights(model / "unet", "diffusion_pytorch_model"):
        digest.update(weights.read_bytes())
    settings = [cfg.generated_per_prompt, FAST_STEPS, FAST_GUIDANCE, cfg.seed]
    digest.update(json.dumps(settings).encode())
    path = cache_root() / f"reconstructor-sets-{digest.hexdigest()[:16]}.npz"
    primitives = training_primitives()
    if path.is_file():
        with np.load(path) as cached:
            return cached["views"], [primitives[i] for i in cached["labels"]]
    from spacetime.pipelines.multiview import MultiViewPipeline

    pipe = MultiViewPipeline.from_pretrained(model)
    views, labels = [], []
    for i, primitive in enumerate(primitives):
        sets = pipe(
            primitive.caption(), steps=FAST_STEPS, guidance=FAST_GUIDANCE,
            scheduler="dpm++", seed=cfg.seed + i, num_images=cfg.generated_per_prompt,
        )  # fmt: skip
        views.append(sets)
        labels += [i] * len(sets)
    views = np.concatenate(views)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, views=views, labels=np.array(labels))

    atomic_write(path, write)
    return views, [primitives[i] for i in labels]


class ReconstructorTask:
    """A Reconstructor trained on world renders and the multi-view model's sets."""

    def __init__(self, cfg: ReconstructorTraining):
        self.cfg = cfg
        self.model_config = ReconstructorConfig(grid=cfg.grid, width=cfg.width, latent=cfg.latent)
        count = int(cfg.max_elevation // cfg.elevation_step) + 1
        elevations = tuple(k * cfg.elevation_step for k in range(count))
        # Views 90° apart from azimuths on a 90° grid: the world frame the lattice is written in
        # stays the one the default cameras imply (the cube's faces stay axis-aligned).
        self.cache = ViewCache(ViewGrid(azimuth_step=90.0, elevations=elevations))
        self.generated = generated_sets(cfg) if cfg.generated_share > 0 else None
        points = lattice_points(cfg.grid)  # (z, y, x, 3)
        truncation = self.model_config.truncation
        self.sdf = {
            shape: Primitive(shape, "red").sdf(points).clamp(-truncation, truncation)
            for shape in SOLIDS
        }

    def frozen(self) -> list[nn.Module]:
        return []

    def build(self) -> nn.Module:
        torch.manual_seed(self.cfg.seed)
        return ReconstructionLoss(Reconstructor(self.model_config))

    def _targets(self, primitives: list[Primitive]) -> tuple[Tensor, Tensor]:
        sdf = torch.stack([self.sdf[p.shape] for p in primitives])
        colour = torch.tensor([COLOURS[p.colour] for p in primitives], dtype=torch.float32) / 255
        return sdf, colour

    @torch.no_grad()
    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        made = 0 if self.generated is None else round(cfg.batch_size * cfg.generated_share)
        sets = sample_view_sets(rng, cfg.batch_size - made, self.cache.grid, 4)
        rendered, _ = render_view_sets(sets, self.cache)
        views = [rearrange((rendered + 1) / 2, "b c v h w -> b v c h w")]
        primitives = [s.primitive for s in sets]
        if made:
            pixels, labels = self.generated
            picks = rng.integers(len(pixels), size=made)
            chosen = torch.from_numpy(pixels[picks]).float() / 255
            views.append(rearrange(chosen, "b v h w c -> b v c h w"))
            primitives += [labels[i] for i in picks]
        sdf, colour = self._targets(primitives)
        batch = {"views": torch.cat(views), "sdf": sdf, "colour": colour}
        return {k: rank_slice(v, rank, world_size) for k, v in batch.items()}

    def export(self, module: nn.Module, folder: Path) -> dict:
        save_reconstructor(module.model.float().eval(), folder)
        return {
            "parameters": sum(p.numel() for p in module.model.parameters()),
            "generated_sets": 0 if self.generated is None else len(self.generated[0]),
        }
