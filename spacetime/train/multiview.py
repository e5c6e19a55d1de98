"""The world multi-view model (MVDream, Shi et al. 2023): sets of views of 3D primitives.

The default image model is inflated with camera conditioning and cross-view attention and trained
whole, with its text encoder (which never saw "cube" or "torus": image captions name 2D shapes
only), on the ε loss over the latents of 4 views of one primitive, 90° apart in azimuth at one
elevation. Sphere tracing costs ~0.04 s a view, more than a training step can spend, so each
primitive is rendered once on a grid of cameras and kept on disk; a step's batch is then a pure
function of (seed, step) that indexes the grid.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from spacetime.formats.weights import atomic_write
from spacetime.train.common import (
    DenoisingLoss,
    drop_captions,
    on_device_of,
    rank_slice,
    step_generator,
)
from spacetime.train.config import MultiViewTraining
from spacetime.world.primitives import Camera, Primitive, render_primitive, sample_primitive
from spacetime.world.raster import RESOLUTION
from spacetime.world.scenes import Split

# Part of every cache key: bump it when render_primitive's output changes, so no run ever reads
# renders of an older renderer.
RENDER_VERSION = 1


def cache_root() -> Path:
    """Where renders are kept between runs: $XDG_CACHE_HOME/spacetime or ~/.cache/spacetime."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spacetime"


@dataclass(frozen=True)
class ViewGrid:
    """The cameras of the render cache: azimuths every `azimuth_step` degrees from 0 at each of
    `elevations`, looking at the origin from `distance`."""

    azimuth_step: float = 15.0
    elevations: tuple[float, ...] = (0.0, 7.5, 15.0, 22.5, 30.0)
    distance: float = 3.0
    resolution: int = RESOLUTION
    supersample: int = 2  # render_primitive's antialiasing, as every world image

    @classmethod
    def from_config(cls, cfg: MultiViewTraining) -> ViewGrid:
        count = int(cfg.max_elevation // cfg.elevation_step) + 1
        return cls(cfg.azimuth_step, tuple(k * cfg.elevation_step for k in range(count)))

    @property
    def azimuths(self) -> tuple[float, ...]:
        return tuple(k * self.azimuth_step for k in range(round(360 / self.azimuth_step)))

    def camera(self, elevation: int, azimuth: int) -> Camera:
        """The camera at grid indices (elevation, azimuth)."""
        return Camera(self.elevations[elevation], self.azimuths[azimuth], self.distance)

    def key(self) -> str:
        """A name for this grid's renders: a hash of the grid and the renderer version."""
        settings = json.dumps({**asdict(self), "render_version": RENDER_VERSION}, sort_keys=True)
        return hashlib.sha256(settings.encode()).hexdigest()[:16]


class ViewCache:
    """uint8 renders (elevations, azimuths, h, w, 3) of each primitive on a grid, rendered on first
    use and kept on disk (one .npy per primitive, written atomically, so concurrent processes and
    killed runs never leave a partial file) and in memory."""

    def __init__(self, grid: ViewGrid, root: Path | None = None):
        self.grid = grid
        self.folder = (cache_root() if root is None else Path(root)) / f"views-{grid.key()}"
        self._memory: dict[Primitive, np.ndarray] = {}

    def views(self, primitive: Primitive) -> np.ndarray:
        if primitive not in self._memory:
            self._memory[primitive] = self._load(primitive)
        return self._memory[primitive]

    def _load(self, primitive: Primitive) -> np.ndarray:
        g = self.grid
        shape = (len(g.elevations), len(g.azimuths), g.resolution, g.resolution, 3)
        path = self.folder / f"{primitive.colour}-{primitive.shape}-{primitive.scale:g}.npy"
        if path.is_file():
            try:
                views = np.load(path)
                if views.shape == shape and views.dtype == np.uint8:
                    return views
            except (OSError, ValueError):  # damaged: render it again
                pass
        views = np.empty(shape, np.uint8)
        for i in range(shape[0]):
            for j in range(shape[1]):
                views[i, j] = render_primitive(
                    primitive, g.camera(i, j), resolution=g.resolution, supersample=g.supersample
                )

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, views)

        atomic_write(path, write)
        return views


@dataclass(frozen=True)
class ViewSet:
    """One training example: a primitive seen from grid cameras at one elevation."""

    primitive: Primitive
    elevation: int  # grid index
    azimuths: tuple[int, ...]  # grid indices, 360/views degrees apart

    def cameras(self, grid: ViewGrid) -> list[Camera]:
        return [grid.camera(self.elevation, a) for a in self.azimuths]


def sample_view_sets(
    rng: np.random.Generator, n: int, grid: ViewGrid, views: int, split: Split = "train"
) -> list[ViewSet]:
    """n sets: a primitive of the split, a random elevation, azimuths a0 + k·360/views, a0 random."""
    count = len(grid.azimuths)
    if count % views:
        raise ValueError(f"{views} evenly spaced views do not fall on a grid of {count} azimuths")
    sets = []
    for _ in range(n):
        primitive = sample_primitive(rng, split)
        elevation = int(rng.integers(len(grid.elevations)))
        start = int(rng.integers(count))
        azimuths = tuple((start + k * count // views) % count for k in range(views))
        sets.append(ViewSet(primitive, elevation, azimuths))
    return sets


def render_view_sets(sets: list[ViewSet], cache: ViewCache) -> tuple[Tensor, Tensor]:
    """Views in [-1, 1] (b, 3, v, h, w) and their camera-to-world matrices (b, v, 4, 4)."""
    pixels = np.stack([cache.views(s.primitive)[s.elevation, list(s.azimuths)] for s in sets])
    x = rearrange(torch.from_numpy(pixels).float() / 127.5 - 1, "b v h w c -> b c v h w")
    poses = [[c.camera_to_world() for c in s.cameras(cache.grid)] for s in sets]
    return x, torch.from_numpy(np.array(poses)).float()


class MultiViewTask:
    """The default image model (`base:`) inflated per WORLD_MULTIVIEW and trained on view sets."""

    def __init__(self, cfg: MultiViewTraining):
        from spacetime.formats.load import load_components

        self.cfg = cfg
        self.base = load_components(cfg.base)
        self.base.vae.eval()
        self.cache = ViewCache(ViewGrid.from_config(cfg))

    def frozen(self) -> list[nn.Module]:
        return [self.base.vae]

    def build(self) -> nn.Module:
        from spacetime.models.inflate import inflate
        from spacetime.models.presets import WORLD_MULTIVIEW

        # Everything trains: the spatial layers must learn shaded solids (the base drew flat 2D
        # shapes), the new layers cameras and cross-view agreement, the text encoder solid names.
        unet = inflate(self.base.unet, WORLD_MULTIVIEW).requires_grad_(True)
        text = self.base.text_encoder.model.requires_grad_(True)
        return DenoisingLoss(unet, text, self.base.schedule.alphas_cumprod.float())

    @torch.no_grad()
    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.cfg.seed, step])
        sets = sample_view_sets(rng, self.cfg.batch_size, self.cache.grid, self.cfg.views)
        x, cameras = render_view_sets(sets, self.cache)
        g = step_generator(self.cfg.seed, step)
        captions = [s.primitive.caption() for s in sets]
        ids = self.base.text_encoder.tokenize(drop_captions(captions, self.cfg.caption_dropout, g))
        # (b, 4, v, h/8, w/8), view by view
        x0 = self.base.vae.encode(on_device_of(self.base.vae, x), generator=g)
        # One noise level per set, shared by its views (MVDream): they are denoised together.
        t = torch.randint(0, self.base.schedule.num_train_timesteps, (len(sets),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        batch = {"ids": ids, "x0": x0, "t": t, "noise": noise, "cameras": cameras}
        return {k: rank_slice(v, rank, world_size) for k, v in batch.items()}

    def export(self, module: nn.Module, folder: Path) -> dict:
        """A diffusers-layout folder whose unet/config.json records the inflation."""
        from spacetime.formats.diffusers import Components, save_diffusers
        from spacetime.models.text import TextEncoder

        text = TextEncoder(self.base.text_encoder.tokenizer, module.text_model.float().eval())
        components = Components(module.unet.float().eval(), self.base.vae, text, self.base.schedule)
        save_diffusers(components, folder, overwrite=True)
        added = sum(
            p.numel()
            for n, p in module.unet.named_parameters()
            if ".view_attentions." in n or n.startswith("camera_embed.")
        )
        return {
            "unet_parameters": sum(p.numel() for p in module.unet.parameters()),
            "multiview_parameters": added,
            "text_parameters": sum(p.numel() for p in module.text_model.parameters()),
        }
