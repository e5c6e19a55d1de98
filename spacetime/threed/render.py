"""Differentiable volume rendering of a Field along world cameras' rays (NeRF quadrature), shaded
per sample as DreamFusion: albedo, Lambertian, or textureless Lambertian."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from spacetime.threed.field import Field
from spacetime.world.palette import DEFAULT_BACKGROUND
from spacetime.world.primitives import AMBIENT, LIGHT, Camera

SHADING_MODES = ("albedo", "lambertian", "textureless")
WORLD_BACKGROUND = tuple(c / 255 for c in DEFAULT_BACKGROUND)


@dataclass(frozen=True)
class Shading:
    """How samples are coloured: `mode`, a unit direction towards a directional light, ambient."""

    mode: str = "lambertian"
    light: tuple[float, float, float] = tuple(LIGHT.tolist())
    ambient: float = AMBIENT

    def __post_init__(self):
        if self.mode not in SHADING_MODES:
            raise ValueError(f"unknown shading {self.mode!r}; expected one of {SHADING_MODES}")


@dataclass(frozen=True)
class Render:
    """Images of v views, (v, c, h, w) channels first, plus per-sample terms of the rays that
    crossed the unit ball, for the regularisers."""

    rgb: Tensor  # (v, 3, h, w) in [0, 1], composited over the background
    opacity: Tensor  # (v, h, w) accumulated weight
    depth: Tensor  # (v, h, w) expected ray depth over the opaque part (0 where empty)
    normal: Tensor  # (v, 3, h, w) weight-averaged world normals (not renormalised)
    weights: Tensor  # (r, s) compositing weights of the r rays that cross the unit ball
    sample_normals: Tensor  # (r, s, 3)
    directions: Tensor  # (r, 3) unit ray directions, pointing away from the camera


def ray_ball(origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Near and far distances to the unit ball along unit rays, and which rays cross it."""
    b = (origins * directions).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - 1.0)
    hit = disc > 0
    root = disc.clamp(min=0).sqrt()
    return (-b - root).clamp(min=0), -b + root, hit


def render(
    field: Field,
    cameras: list[Camera],
    resolution: int = 64,
    samples: int = 64,
    shading: Shading = Shading(),
    background: tuple[float, float, float] = WORLD_BACKGROUND,
    generator: torch.Generator | None = None,
) -> Render:
    """Volume-render `cameras` at `resolution`^2 with `samples` points per ray across the unit
    ball: alpha = 1 - exp(-sigma delta), weights = alpha x transmittance (NeRF, Mildenhall 2020).
    With a generator the samples are stratified (jittered within their bins, for training);
    without one they sit at bin centres (deterministic, for evaluation)."""
    views = len(cameras)
    rays = [camera.rays(resolution) for camera in cameras]
    origins = rearrange(torch.stack([o for o, _ in rays]), "v h w xyz -> (v h w) xyz")
    directions = rearrange(torch.stack([d for _, d in rays]), "v h w xyz -> (v h w) xyz")
    device = field.grids[0].device
    origins, directions = origins.to(device), directions.to(device)
    near, far, hit = ray_ball(origins, directions)
    # Only rays through the unit ball (about 60% of a 45-degree view at distance 3) can meet
    # density: march those alone.
    index = hit.nonzero().squeeze(-1)
    o, d, near, far = origins[index], directions[index], near[index], far[index]

    bins = torch.arange(samples, device=device, dtype=torch.float32)
    offsets = (
        torch.full((len(index), samples), 0.5, device=device)
        if generator is None
        else torch.rand((len(index), samples), generator=generator).to(device)
    )
    delta = (far - near) / samples  # (r,)
    t = near[:, None] + (bins + offsets) * delta[:, None]  # (r, s)
    points = o[:, None] + t[..., None] * d[:, None]  # (r, s, 3)
    values = field.sample(points)

    alpha = 1 - torch.exp(-values.density * delta[:, None])
    # Transmittance before each sample: an exclusive cumulative product along the ray.
    transmittance = torch.cumprod(
        torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1] + 1e-10], dim=1), dim=1
    )
    weights = alpha * transmittance  # (r, s)

    colour = shade(values.albedo, values.normal, shading)
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    opacity_ray = weights.sum(1)
    rgb_ray = (weights[..., None] * colour).sum(1) + (1 - opacity_ray[:, None]) * bg
    depth_ray = (weights * t).sum(1) / opacity_ray.clamp(min=1e-6)
    normal_ray = (weights[..., None] * values.normal).sum(1)

    n = views * resolution * resolution
    # Scatter the marched rays back into full images; rays that miss the ball see background.
    rgb = bg.expand(n, 3).index_copy(0, index, rgb_ray)
    opacity = torch.zeros(n, device=device).index_copy(0, index, opacity_ray)
    depth = torch.zeros(n, device=device).index_copy(0, index, depth_ray)
    normal = torch.zeros(n, 3, device=device).index_copy(0, index, normal_ray)
    image = "(v h w) c -> v c h w"
    plane = "(v h w) -> v h w"
    size = dict(v=views, h=resolution)
    return Render(
        rgb=rearrange(rgb, image, **size),
        opacity=rearrange(opacity, plane, **size),
        depth=rearrange(depth, plane, **size),
        normal=rearrange(normal, image, **size),
        weights=weights,
        sample_normals=values.normal,
        directions=d,
    )


def shade(albedo: Tensor, normal: Tensor, shading: Shading) -> Tensor:
    """Colour (..., 3) of points: ambient + (1 - ambient) x max(0, n . l), times the albedo (or
    times white for textureless; DreamFusion, Sec. 3.1)."""
    if shading.mode == "albedo":
        return albedo
    light = torch.tensor(shading.light, dtype=normal.dtype, device=normal.device)
    lambert = shading.ambient + (1 - shading.ambient) * (normal @ light).clamp(min=0)[..., None]
    return lambert.expand_as(albedo) if shading.mode == "textureless" else albedo * lambert


@dataclass(frozen=True)
class ShadingConfig:
    """Random shading per step (DreamFusion): how often each mode is drawn and where the light is.

    light "world" keeps the world's fixed light, which is how every image the world models were
    trained on is lit; "random" draws it near the camera, as DreamFusion does for real photos."""

    albedo: float = 0.1  # probability of plain albedo
    textureless: float = 0.1  # probability of white Lambertian (geometry only)
    light: str = "world"
    ambient: float = AMBIENT

    def __post_init__(self):
        if self.albedo < 0 or self.textureless < 0 or self.albedo + self.textureless > 1:
            raise ValueError(
                "shading probabilities must be >= 0 and sum to <= 1, got "
                f"albedo={self.albedo}, textureless={self.textureless}"
            )
        if self.light not in ("world", "random"):
            raise ValueError(f"light must be 'world' or 'random', got {self.light!r}")


def sample_shading(generator: torch.Generator, cfg: ShadingConfig, camera: Camera) -> Shading:
    """One step's shading, shared by all its views so a multi-view set is lit consistently."""
    u = float(torch.rand((), generator=generator))
    mode = (
        "albedo"
        if u < cfg.albedo
        else "textureless"
        if u < cfg.albedo + cfg.textureless
        else "lambertian"
    )
    light = LIGHT
    if cfg.light == "random":
        towards_camera = torch.from_numpy(camera.position()).float()
        jitter = torch.randn(3, generator=generator) * 0.5
        light = F.normalize(F.normalize(towards_camera, dim=0) + jitter, dim=0)
    return Shading(mode, tuple(light.tolist()), cfg.ambient)
