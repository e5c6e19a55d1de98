"""Training cameras for score distillation, on the world's camera sphere (DreamFusion, MVDream)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from spacetime.errors import SpacetimeError
from spacetime.world.primitives import Camera


@dataclass(frozen=True)
class CameraRange:
    """Where training cameras sit: the world's sample_camera ranges by default."""

    elevation: tuple[float, float] = (-10.0, 50.0)
    distance: tuple[float, float] = (2.6, 3.4)
    fov: float = 45.0

    def __post_init__(self):
        lo, hi = self.elevation
        if not -90 < lo <= hi < 90:
            raise ValueError(f"elevation range must lie in (-90, 90) degrees, got {self.elevation}")
        if not 1 < self.distance[0] <= self.distance[1]:
            raise ValueError(f"distance range must exceed 1 and be ordered, got {self.distance}")


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def orbit_views(generator: torch.Generator, views: int, where: CameraRange) -> list[Camera]:
    """`views` cameras evenly spaced in azimuth from a random start, at one random elevation and
    distance (MVDream's 4-view sets; views=1 is DreamFusion's single random camera)."""
    elevation = _uniform(generator, *where.elevation)
    distance = _uniform(generator, *where.distance)
    start = _uniform(generator, 0.0, 360.0)
    return [
        Camera(elevation, (start + 360.0 * k / views) % 360.0, distance, where.fov)
        for k in range(views)
    ]


def camera_matrices(cameras: Sequence[Camera] | np.ndarray | Tensor) -> Tensor:
    """Cameras → float32 camera-to-world matrices (v, 4, 4) (OpenGL convention, as
    world.primitives), or matrices (v, 4, 4) / (b, v, 4, 4) as given."""
    if isinstance(cameras, Sequence) and cameras and isinstance(cameras[0], Camera):
        return torch.from_numpy(np.stack([c.camera_to_world() for c in cameras])).float()
    matrices = torch.as_tensor(np.asarray(cameras) if not isinstance(cameras, Tensor) else cameras)
    if matrices.ndim not in (3, 4) or matrices.shape[-2:] != (4, 4) or not len(matrices):
        raise SpacetimeError(
            "cameras must be a list of Camera or camera-to-world matrices (v, 4, 4) or "
            f"(b, v, 4, 4), got shape {tuple(matrices.shape)}"
        )
    return matrices.float()
