"""A density + albedo field on a multi-resolution dense voxel grid, bounded by the unit ball.

The field is the sum of trilinearly upsampled grids at resolutions r/2^k (k = levels-1 … 0): the
coarse levels gather gradients from many pixels, which keeps early score distillation smooth, and the
finest level adds detail (a dense analogue of Instant-NGP's resolution pyramid, without hashing).
Its scalar channel is interpolated before its activation (DVGO's post-activation), so surfaces stay
sharp between voxels. Two kinds:
- "sdf": a signed distance grid, rendered through VolSDF's density (Yariv et al. 2021), starting as
  a sphere. The surface is crisp from the first step and the mesh is its zero level set, so a few
  hundred steps already give a solid, watertight object.
- "density": threestudio's raw density with its "blob_magic3d" density blob at the centre (as
  DreamFusion); closest to the papers, but it needs thousands of steps to turn fog into a surface.
Grid layout: a lattice tensor (c, z, y, x) spanning [-1, 1]^3 with voxels on the corners
(align_corners=True), so lattice point (i, j, k) sits at x = -1 + 2k / (r - 1), etc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.world.primitives import Primitive

FIELD_KINDS = ("sdf", "density")
# Lattice channels: the scalar (signed distance or raw density), albedo logits, unit normals.
SCALAR, ALBEDO, NORMAL = slice(0, 1), slice(1, 4), slice(4, 7)
# The density whose level set is the mesh of a "density" field: 48 samples across the unit ball
# are ~0.04 apart, and one such step through density 10 absorbs a third of the light.
SURFACE_DENSITY = 10.0


@dataclass(frozen=True)
class FieldConfig:
    """Grid sizes, the kind of field, and its initial shape: a sphere of radius `blob_radius`
    ("sdf"), or threestudio's blob_magic3d (scale 10, std 0.5) density blob ("density")."""

    resolution: int = 64  # finest lattice, points per axis over [-1, 1]
    levels: int = 3  # grids at resolution, resolution/2, resolution/4, …
    kind: str = "sdf"
    blob_radius: float = 0.5
    blob_density: float = 10.0  # "density": raw density at the centre, 0 at blob_radius
    beta: float = 0.025  # "sdf": VolSDF's surface width; density inside is 1 / beta
    # The albedo logits are stored divided by this, so Adam (whose steps are the lr whatever the
    # gradient's size) moves colour this many times faster than shape: with one lr for both, the
    # albedo was still drifting from its grey start when the shape had settled.
    albedo_scale: float = 10.0

    def __post_init__(self):
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}; expected one of {FIELD_KINDS}")
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")
        if self.resolution // 2 ** (self.levels - 1) < 4:
            raise ValueError(
                f"resolution {self.resolution} is too small for {self.levels} levels "
                "(the coarsest grid needs >= 4 points per axis)"
            )
        if not 0 < self.blob_radius < 1:
            raise ValueError(f"blob_radius must be in (0, 1), got {self.blob_radius}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")

    def level_resolutions(self) -> list[int]:
        return [self.resolution // 2**k for k in reversed(range(self.levels))]


def lattice_points(resolution: int) -> Tensor:
    """World points (z, y, x, 3) of a lattice spanning [-1, 1]^3 (xyz in the last axis)."""
    c = torch.linspace(-1.0, 1.0, resolution)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def volsdf_density(sdf: Tensor, beta: float) -> Tensor:
    """VolSDF: sigma = (1 / beta) Psi_beta(-sdf), Psi_beta the CDF of a Laplace(0, beta): 1 / beta
    deep inside, 1 / (2 beta) on the surface, decaying as exp(-sdf / beta) outside."""
    s = -sdf / beta
    # 0.5 exp(-|s|) mirrored; written with -|s| so neither branch can overflow.
    tail = 0.5 * torch.exp(-s.abs())
    return torch.where(s <= 0, tail, 1 - tail) / beta


def softplus_of_inverse(density: float) -> float:
    """The raw value whose softplus is `density`."""
    return density + math.log(-math.expm1(-density))


@dataclass(frozen=True)
class Samples:
    """Field values at points (..., 3): density (...), albedo (..., 3) in [0, 1], unit normals."""

    density: Tensor
    albedo: Tensor
    normal: Tensor


def _lookup(lattice: Tensor, points: Tensor) -> Tensor:
    """(n, c) trilinear values of a lattice (c, z, y, x) at points (n, 3)."""
    # grid_sample reads the last axis as (x, y, z) against an input laid out (c, z, y, x).
    grid = rearrange(points, "n xyz -> 1 1 1 n xyz")
    values = F.grid_sample(lattice[None], grid, mode="bilinear", align_corners=True)
    return rearrange(values, "1 c 1 1 n -> n c")


class Field(nn.Module):
    """Density and albedo over [-1, 1]^3, of which the renderer and the mesh see the unit ball
    (DreamFusion's bounded scene, as threestudio's implicit volume)."""

    def __init__(self, cfg: FieldConfig = FieldConfig()):
        super().__init__()
        self.config = cfg
        # Each level holds the scalar and three albedo logits; all start at zero, so the prior
        # alone sets the initial shape and the albedo starts grey (sigmoid(0) = 0.5).
        self.grids = nn.ParameterList(
            nn.Parameter(torch.zeros(4, r, r, r)) for r in cfg.level_resolutions()
        )
        radius = lattice_points(cfg.resolution).norm(dim=-1)
        if cfg.kind == "sdf":
            prior = radius - cfg.blob_radius
        else:
            prior = cfg.blob_density * (1 - radius / cfg.blob_radius)
        self.register_buffer("prior", prior, persistent=False)

    @classmethod
    def from_sdf(cls, primitive: Primitive, cfg: FieldConfig = FieldConfig()) -> Field:
        """A field whose surface is the primitive's, in the primitive's colour: a known answer for
        the renderer and the mesh extraction. A "density" field rises steeply inside, crossing
        SURFACE_DENSITY on the surface."""
        from spacetime.world.palette import COLOURS

        field = cls(cfg)
        sdf = primitive.sdf(lattice_points(cfg.resolution))
        if cfg.kind == "density":  # about a voxel from empty to opaque (slope 2000 per unit)
            sdf = (softplus_of_inverse(SURFACE_DENSITY) - 2000 * sdf).clamp(-100, 100)
        albedo = torch.tensor(COLOURS[primitive.colour], dtype=torch.float32) / 255
        with torch.no_grad():
            for grid in field.grids:
                grid.zero_()
            finest = field.grids[-1]
            finest[0] = sdf - field.prior
            # logit of the albedo, clamped so that saturated channels (0 or 1) stay finite
            finest[1:] = torch.logit(albedo.clamp(1e-3, 1 - 1e-3))[:, None, None, None]
            finest[1:] /= cfg.albedo_scale
        return field

    def channels(self) -> tuple[Tensor, Tensor]:
        """The scalar lattice (r, r, r) and the summed albedo logits (3, r, r, r)."""
        r = self.config.resolution
        total = 0
        for grid in self.grids:
            if grid.shape[-1] != r:
                size = (r, r, r)
                grid = F.interpolate(grid[None], size, mode="trilinear", align_corners=True)[0]
            total = total + grid
        return total[0] + self.prior, total[ALBEDO] * self.config.albedo_scale

    def gradient(self, scalar: Tensor) -> Tensor:
        """(3, r, r, r) central differences of a scalar lattice, xyz first, per world unit."""
        spacing = 2.0 / (self.config.resolution - 1)
        p = F.pad(scalar[None, None], (1, 1, 1, 1, 1, 1), mode="replicate")[0, 0]
        gz = p[2:, 1:-1, 1:-1] - p[:-2, 1:-1, 1:-1]
        gy = p[1:-1, 2:, 1:-1] - p[1:-1, :-2, 1:-1]
        gx = p[1:-1, 1:-1, 2:] - p[1:-1, 1:-1, :-2]
        return torch.stack([gx, gy, gz]) / (2 * spacing)

    def lattice(self) -> Tensor:
        """(7, r, r, r): the scalar, albedo logits and unit normals at the finest lattice."""
        scalar, albedo = self.channels()
        # Normals need the scalar's gradient at every sample; central differences on the lattice
        # cost one small stencil per step instead of six extra lookups per sample, and normalising
        # there (r^3 points, not rays x samples) interpolates normals as Phong shading does.
        # A signed distance grows outward, a density inward.
        outward = 1.0 if self.config.kind == "sdf" else -1.0
        normal = outward * F.normalize(self.gradient(scalar), dim=0, eps=1e-12)
        return torch.cat([scalar[None], albedo, normal])

    def density_of(self, scalar: Tensor) -> Tensor:
        """Volume density (per world unit) of interpolated scalar values: VolSDF for "sdf",
        softplus for "density" (as threestudio: smooth, positive, linear for large values)."""
        if self.config.kind == "sdf":
            return volsdf_density(scalar, self.config.beta)
        return F.softplus(scalar)

    def sample(self, points: Tensor, lattice: Tensor | None = None) -> Samples:
        """Trilinear lookups at world points (..., 3) in the unit ball (the renderer marches only
        there); pass `lattice()` to share it across calls."""
        lattice = self.lattice() if lattice is None else lattice
        values = _lookup(lattice, points.reshape(-1, 3))
        values = values.reshape(*points.shape[:-1], lattice.shape[0])
        return Samples(
            self.density_of(values[..., 0]),
            torch.sigmoid(values[..., ALBEDO]),
            values[..., NORMAL],
        )

    @torch.no_grad()
    def surface_volume(self, resolution: int, chunk: int = 1 << 18) -> tuple[Tensor, float, str]:
        """(volume (x, y, z) over [-1, 1]^3, level, inside): the surface is the volume's `level`
        set, and the solid lies where it is "below" (signed distance) or "above" (density) it.
        Nothing exists outside the unit ball (DreamFusion's bounded scene)."""
        scalar = self.lattice()[SCALAR]
        points = rearrange(lattice_points(resolution), "z y x xyz -> (x y z) xyz")
        values = torch.cat([_lookup(scalar, p)[:, 0] for p in points.split(chunk)])
        outside = points.norm(dim=-1) - 1.0  # the unit ball's own signed distance
        if self.config.kind == "sdf":
            # Intersect with the ball: the larger of two signed distances.
            volume, level, inside = torch.maximum(values, outside), 0.0, "below"
        else:
            volume = torch.where(outside < 0, F.softplus(values), 0.0)
            level, inside = SURFACE_DENSITY, "above"
        return volume.reshape(resolution, resolution, resolution), level, inside

    def eikonal(self) -> Tensor:
        """Mean (|grad sdf| - 1)^2 over the lattice (Gropp et al. 2020): keeps an "sdf" field a
        distance, so its surface stays as sharp as beta says rather than spreading into fog."""
        scalar, _ = self.channels()
        return ((self.gradient(scalar).norm(dim=0) - 1) ** 2).mean()

    @torch.no_grad()
    def albedo_at(self, points: Tensor, chunk: int = 1 << 18) -> Tensor:
        """Albedo (n, 3) in [0, 1] at world points (n, 3)."""
        lattice = self.lattice()
        return torch.cat([self.sample(p, lattice).albedo for p in points.split(chunk)])
