"""3D primitives as signed distance functions, cameras on a sphere, and a sphere-tracing renderer.

Conventions (OpenGL-style, as the multi-view model and the 3D code expect):
- World: right-handed, +y up; every primitive is centred on the origin and fits in the unit ball.
- Camera: looks down its own -z, +x right, +y up in the image. `camera_to_world` is the 4x4 matrix
  whose columns are the camera's x, y, z axes and its position, in world coordinates.
- A camera at elevation e, azimuth a (degrees) and distance d sits at
  d * (cos e sin a, sin e, cos e cos a) and looks at the origin: azimuth 0 is on +z, azimuth 90 on
  +x, positive elevation looks down from above.
- Image pixel (row i, column j) sees camera-space direction
  ((j + 0.5 - w/2) / f, -(i + 0.5 - h/2) / f, -1), f = (h / 2) / tan(fov / 2), fov the vertical
  field of view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from spacetime.world.captions import PrimitiveSpec, primitive_caption
from spacetime.world.palette import COLOURS, SOLIDS, background_rgb
from spacetime.world.raster import RESOLUTION
from spacetime.world.scenes import Split

# Held out of training: four colour x solid pairs, one per colour and solid at most, so every colour
# and every solid is still seen. The headline prompt `a red cube` is trained on.
HELDOUT_PRIMITIVES: frozenset[tuple[str, str]] = frozenset(
    {("orange", "sphere"), ("blue", "cube"), ("white", "cone"), ("yellow", "torus")}
)

MAX_STEPS = 128
HIT_EPS = 1e-4  # world units, far below a pixel's footprint (~0.04 at distance 3)
AMBIENT = 0.35
# Fixed in the world (not the camera) so shading is consistent across views: above, front, right.
LIGHT = F.normalize(torch.tensor([0.5, 1.0, 0.8]), dim=0)


def sd_sphere(p: Tensor, radius: float) -> Tensor:
    """Signed distance from points (..., 3) to a sphere at the origin."""
    return p.norm(dim=-1) - radius


def sd_box(p: Tensor, half: float) -> Tensor:
    """Signed distance to an axis-aligned cube of half-extent `half` (Quilez)."""
    q = p.abs() - half
    return q.clamp(min=0).norm(dim=-1) + q.amax(dim=-1).clamp(max=0)


def sd_cylinder(p: Tensor, radius: float, half_height: float) -> Tensor:
    """Signed distance to a capped cylinder along y (Quilez)."""
    qx = torch.hypot(p[..., 0], p[..., 2]) - radius
    qy = p[..., 1].abs() - half_height
    return torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def sd_cone(p: Tensor, radius: float, half_height: float) -> Tensor:
    """Signed distance to a cone along y, base `radius` at -half_height, apex at +half_height."""
    # Quilez's capped cone with a zero top radius, exact inside and out; worked in the (r, y)
    # half-plane, where the solid is the triangle (0, -h), (radius, -h), (0, h).
    r, y = torch.hypot(p[..., 0], p[..., 2]), p[..., 1]
    # Offset to the base disc: only below the centre is the radius clamped to the base.
    ax = r - torch.minimum(r, torch.where(y < 0, radius, 0.0))
    ay = y.abs() - half_height
    # Offset to the slanted side, the segment from the apex (0, h) along k = (radius, -2h).
    kx, ky = radius, -2 * half_height
    s = ((r * kx + (y - half_height) * ky) / (kx * kx + ky * ky)).clamp(0, 1)
    bx, by = r - s * kx, y - half_height - s * ky
    d = torch.minimum(ax * ax + ay * ay, bx * bx + by * by).sqrt()
    return torch.where((bx < 0) & (ay < 0), -d, d)


def sd_torus(p: Tensor, major: float, minor: float) -> Tensor:
    """Signed distance to a torus in the xz plane: ring radius `major`, tube radius `minor`."""
    return torch.hypot(torch.hypot(p[..., 0], p[..., 2]) - major, p[..., 1]) - minor


# Dimensions chosen so that every solid reaches ~0.8-0.95 from the origin: similar on-screen sizes.
def _sdf(shape: str, p: Tensor) -> Tensor:
    if shape == "sphere":
        return sd_sphere(p, 0.8)
    if shape == "cube":
        return sd_box(p, 0.55)
    if shape == "cylinder":
        return sd_cylinder(p, 0.55, 0.6)
    if shape == "cone":
        return sd_cone(p, 0.7, 0.7)
    return sd_torus(p, 0.6, 0.25)


@dataclass(frozen=True)
class Primitive:
    """A coloured solid centred on the origin, scaled by `scale` (1 fits the unit ball)."""

    shape: str
    colour: str
    scale: float = 1.0

    def __post_init__(self):
        if self.shape not in SOLIDS:
            raise ValueError(f"unknown solid {self.shape!r}; expected one of {', '.join(SOLIDS)}")
        if self.colour not in COLOURS:
            raise ValueError(
                f"unknown colour {self.colour!r}; expected one of {', '.join(COLOURS)}"
            )
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1] to fit the unit ball, got {self.scale}")

    @property
    def spec(self) -> PrimitiveSpec:
        """The attributes a caption names."""
        return PrimitiveSpec(self.shape, self.colour)

    def caption(self) -> str:
        """`a red cube`."""
        return primitive_caption(self.spec)

    def sdf(self, points: Tensor) -> Tensor:
        """Signed distance from world points (..., 3) to the surface, negative inside."""
        # Uniform scaling keeps an SDF exact once the distance is scaled back.
        return _sdf(self.shape, points / self.scale) * self.scale


@dataclass(frozen=True)
class Camera:
    """A pinhole camera on a sphere around the origin, looking at it (angles in degrees)."""

    elevation: float
    azimuth: float
    distance: float = 3.0
    fov: float = 45.0

    def __post_init__(self):
        if not -90 < self.elevation < 90:
            raise ValueError(f"elevation must be in (-90, 90) degrees, got {self.elevation}")
        if self.distance <= 1:
            raise ValueError(f"distance must exceed 1 (outside the unit ball), got {self.distance}")
        if not 0 < self.fov < 180:
            raise ValueError(f"fov must be in (0, 180) degrees, got {self.fov}")

    def position(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        e, a = math.radians(self.elevation), math.radians(self.azimuth)
        return self.distance * np.array(
            [math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)]
        )

    def camera_to_world(self) -> np.ndarray:
        """4x4 camera-to-world matrix, OpenGL convention (columns: right, up, back, position)."""
        eye = self.position()
        back = eye / np.linalg.norm(eye)  # the camera's +z points away from what it looks at
        right = np.cross([0.0, 1.0, 0.0], back)
        right /= np.linalg.norm(right)
        up = np.cross(back, right)
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, back, eye
        return pose

    def focal(self, resolution: int = RESOLUTION) -> float:
        """Focal length in pixels for a square image of this many pixels."""
        return resolution / 2 / math.tan(math.radians(self.fov) / 2)

    def rays(self, resolution: int = RESOLUTION) -> tuple[Tensor, Tensor]:
        """World-space ray origins and unit directions, each (h, w, 3), through pixel centres."""
        f = self.focal(resolution)
        c = (torch.arange(resolution, dtype=torch.float32) + 0.5 - resolution / 2) / f
        y, x = torch.meshgrid(-c, c, indexing="ij")
        directions = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
        pose = torch.from_numpy(self.camera_to_world()).float()
        directions = F.normalize(directions @ pose[:3, :3].T, dim=-1)
        return pose[:3, 3].expand_as(directions), directions


def orbit(views: int, elevation: float = 20.0, distance: float = 3.0) -> list[Camera]:
    """`views` cameras at one elevation, azimuths evenly spaced from 0."""
    return [Camera(elevation, 360.0 * k / views, distance) for k in range(views)]


@dataclass(frozen=True)
class Hits:
    """What each pixel's ray hit: mask (h, w) bool, ray depth (h, w), unit normals (h, w, 3)."""

    mask: Tensor
    depth: Tensor
    normal: Tensor


def trace(primitive: Primitive, camera: Camera, resolution: int = RESOLUTION) -> Hits:
    """Sphere tracing (Hart 1996) of the primitive's SDF; normals from central differences."""
    origins, directions = camera.rays(resolution)
    # March only between the near and far sides of the unit ball, which contains every primitive.
    near, far = camera.distance - 1.0, camera.distance + 1.0
    t = torch.full(origins.shape[:-1], near)
    for _ in range(MAX_STEPS):
        d = primitive.sdf(origins + t[..., None] * directions)
        done = (d.abs() < HIT_EPS) | (t > far)
        if bool(done.all()):
            break
        t = torch.where(done, t, t + d)
    mask = d.abs() < HIT_EPS
    points = origins + t[..., None] * directions
    eps = 1e-3
    offsets = torch.eye(3) * eps
    normal = torch.stack(
        [primitive.sdf(points + o) - primitive.sdf(points - o) for o in offsets], dim=-1
    )
    return Hits(mask, torch.where(mask, t, torch.inf), F.normalize(normal, dim=-1))


def render_primitive(
    primitive: Primitive,
    camera: Camera,
    background: str | None = None,
    resolution: int = RESOLUTION,
    supersample: int = 2,
) -> np.ndarray:
    """uint8 (h, w, 3) view: Lambertian shading plus ambient, antialiased by supersampling."""
    hits = trace(primitive, camera, resolution * supersample)
    shade = AMBIENT + (1 - AMBIENT) * (hits.normal @ LIGHT).clamp(min=0)
    colour = torch.tensor(COLOURS[primitive.colour], dtype=torch.float32)
    image = torch.where(
        hits.mask[..., None],
        shade[..., None] * colour,
        torch.tensor(background_rgb(background), dtype=torch.float32),
    )
    image = rearrange(image, "(h a) (w b) c -> h w c (a b)", a=supersample, b=supersample).mean(-1)
    return image.round().to(torch.uint8).numpy()


def sample_primitive(rng: np.random.Generator, split: Split = "train") -> Primitive:
    """A colour x solid of the split at scale 1."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'heldout'")
    pairs = sorted(
        (colour, shape)
        for colour in COLOURS
        for shape in SOLIDS
        if ((colour, shape) in HELDOUT_PRIMITIVES) == (split == "heldout")
    )
    colour, shape = pairs[rng.integers(len(pairs))]
    return Primitive(shape, colour)


def sample_camera(rng: np.random.Generator) -> Camera:
    """A camera at elevation -10 to 50 degrees, any azimuth, distance 2.6 to 3.4."""
    return Camera(
        float(rng.uniform(-10, 50)), float(rng.uniform(0, 360)), float(rng.uniform(2.6, 3.4))
    )
