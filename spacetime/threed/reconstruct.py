"""Feed-forward reconstruction: four views of an object → its field in one pass (the fast path).

In the manner of the large reconstruction models (LRM, Hong et al. 2023; LGM, Tang et al. 2024)
and of the voxel decoders before them (3D-R2N2, Pix2Vox): a 2D encoder shared by the views, their
features fused into one code, and a 3D decoder that writes the object into a lattice: a truncated
signed distance (the surface) and albedo logits (its colour). The lattice becomes a `Field`, so
the fast path's mesh comes out of the same extraction as score distillation's, and score
distillation can start from it.

The views are a multi-view set at `default_cameras()` (the multi-view model's default: four views
90° apart at 15° elevation): the decoder's lattice is in world coordinates, so the cameras are
implied by the order of the views, as in the sets the reconstructor was trained on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.errors import CheckpointError, SpacetimeError
from spacetime.threed.field import Field, FieldConfig

WEIGHTS, CONFIG = "reconstructor.safetensors", "config.json"


@dataclass(frozen=True)
class ReconstructorConfig:
    """Sizes of the reconstructor: views in, lattices out."""

    views: int = 4
    image_size: int = 64  # pixels per side of each view
    grid: int = 16  # lattice points per axis of the signed distance over [-1, 1]^3
    colour_grid: int = 8  # lattice points per axis of the albedo
    width: int = 32  # channels of the first encoder stage; later stages double it, up to 4x
    latent: int = 128  # the fused code of one set of views
    truncation: float = 0.2  # signed distances are predicted within ±truncation (a TSDF)

    def __post_init__(self):
        if self.image_size % 16 or self.image_size < 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if self.grid < 8 or self.grid & (self.grid - 1):
            raise ValueError(f"grid must be a power of two >= 8, got {self.grid}")
        if self.colour_grid < 8 or self.grid % self.colour_grid:
            raise ValueError(f"colour_grid must divide grid and be >= 8, got {self.colour_grid}")
        if min(self.views, self.width, self.latent) < 1 or self.truncation <= 0:
            raise ValueError("views, width, latent and truncation must be positive")


def _stage(cin: int, cout: int, conv=nn.Conv2d, **kwargs) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, **kwargs), nn.GroupNorm(8, cout), nn.SiLU())


class Reconstructor(nn.Module):
    """views (b, v, 3, h, w) in [0, 1] → (signed distance (b, g, g, g), albedo logits
    (b, 3, c, c, c)), both lattices laid out (z, y, x) over [-1, 1]^3 as `Field`'s."""

    def __init__(self, cfg: ReconstructorConfig = ReconstructorConfig()):
        super().__init__()
        self.config = cfg
        w = cfg.width
        # (3, s, s) → (4w, s/16, s/16): four stride-2 stages
        self.encoder = nn.Sequential(
            _stage(3, w, kernel_size=3, stride=2, padding=1),
            _stage(w, 2 * w, kernel_size=3, stride=2, padding=1),
            _stage(2 * w, 4 * w, kernel_size=3, stride=2, padding=1),
            _stage(4 * w, 4 * w, kernel_size=3, stride=2, padding=1),
        )
        cells = (cfg.image_size // 16) ** 2
        self.fuse = nn.Sequential(nn.Linear(cfg.views * 4 * w * cells, cfg.latent), nn.SiLU())
        self.seed = nn.Linear(cfg.latent, 4 * w * 4**3)  # a 4^3 lattice of features
        up = dict(conv=nn.ConvTranspose3d, kernel_size=4, stride=2, padding=1)
        stages, channels, size = [], 4 * w, 4
        while size < cfg.grid:
            out = max(channels // 2, 8)
            stages.append(_stage(channels, out, **up))
            channels, size = out, size * 2
            if size == cfg.colour_grid:
                self.colour_channels = channels
        self.decoder = nn.ModuleList(stages)
        self.sdf_head = nn.Conv3d(channels, 1, 3, padding=1)
        self.colour_head = nn.Conv3d(self.colour_channels, 3, 3, padding=1)

    def forward(self, views: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.config
        b, v = views.shape[:2]
        if views.shape[1:] != (cfg.views, 3, cfg.image_size, cfg.image_size):
            raise SpacetimeError(
                f"the reconstructor reads {cfg.views} views of {cfg.image_size}x{cfg.image_size} "
                f"pixels (b, {cfg.views}, 3, h, w), got {tuple(views.shape)}"
            )
        features = self.encoder(rearrange(views * 2 - 1, "b v c h w -> (b v) c h w"))
        code = self.fuse(rearrange(features, "(b v) c h w -> b (v c h w)", v=v))
        x = rearrange(self.seed(code), "b (c z y x) -> b c z y x", z=4, y=4, x=4)
        colour = None
        for stage in self.decoder:
            x = stage(x)
            if x.shape[-1] == cfg.colour_grid:
                colour = self.colour_head(x)
        sdf = cfg.truncation * torch.tanh(self.sdf_head(x)[:, 0])
        return sdf, colour

    @torch.no_grad()
    def field(self, views: Tensor, cfg: FieldConfig | None = None) -> Field:
        """A `Field` holding the reconstruction of one set of views (1, v, 3, h, w): the signed
        distance and albedo upsampled (trilinear) to the field's finest lattice (`cfg`: the
        default FieldConfig, score distillation's)."""
        cfg = FieldConfig() if cfg is None else cfg
        if len(views) != 1:
            raise SpacetimeError(f"one set of views at a time, got {len(views)}")
        if cfg.kind != "sdf":
            raise SpacetimeError("the reconstructor writes signed distances: an 'sdf' field")
        sdf, colour = self(views.to(next(self.parameters()).device, torch.float32))
        size = (cfg.resolution,) * 3
        sdf = F.interpolate(sdf[:, None], size, mode="trilinear", align_corners=True)[0, 0]
        colour = F.interpolate(colour, size, mode="trilinear", align_corners=True)[0]
        field = Field(cfg).to(sdf.device)
        for grid in field.grids:
            grid.zero_()
        field.grids[-1][0] = sdf - field.prior
        field.grids[-1][1:] = colour / cfg.albedo_scale
        return field.eval()


def save_reconstructor(model: Reconstructor, folder: str | os.PathLike) -> None:
    """`folder`/reconstructor.safetensors and config.json (written atomically)."""
    from safetensors.torch import save_file

    from spacetime.formats.weights import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, str(tmp), {"format": "pt"}))
    text = json.dumps(asdict(model.config), indent=2) + "\n"
    atomic_write(folder / CONFIG, lambda tmp: tmp.write_text(text))


def load_reconstructor(folder: str | os.PathLike) -> Reconstructor:
    """A reconstructor saved by `save_reconstructor`, in fp32 on the CPU, in eval mode."""
    from spacetime.formats.weights import load_into, read_weights

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        raise CheckpointError(f"{folder} holds no reconstructor ({WEIGHTS} and {CONFIG})")
    try:
        cfg = ReconstructorConfig(**json.loads((folder / CONFIG).read_text()))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG}: {e}") from None
    model = Reconstructor(cfg)
    state = {k: v.float() for k, v in read_weights(folder / WEIGHTS).items()}
    load_into(model, state, "reconstructor")
    return model.eval()


# The multi-view model's sets for the fast path: as its model card measured them (and as the
# reconstructor's training sets were made).
FAST_STEPS, FAST_GUIDANCE = 20, 5.0


def reconstruct(
    components,
    reconstructor: Reconstructor,
    prompt: str,
    *,
    seed: int = 0,
    negative_prompt: str = "",
) -> Field:
    """Prompt → a multi-view set from `components` (a multi-view model) at its default cameras →
    the reconstructor's field, in one pass."""
    from spacetime.pipelines.multiview import MultiViewPipeline

    device = next(components.unet.parameters()).device
    # fp32 weights stay fp32 (score distillation may refine with them next); the sampling runs
    # at the precision the reconstructor's training sets were made at (auto: bf16 here).
    pipe = MultiViewPipeline(components, device, precision="fp32")
    views = pipe(
        prompt, negative_prompt or None, steps=FAST_STEPS, guidance=FAST_GUIDANCE, scheduler="dpm++",
        seed=seed, precision="auto",
    )[0]  # fmt: skip
    size = reconstructor.config.image_size
    if views.shape[1:3] != (size, size):
        raise SpacetimeError(
            f"the reconstructor reads {size}x{size} views; this model makes "
            f"{views.shape[2]}x{views.shape[1]}"
        )
    pixels = rearrange(torch.from_numpy(views).float() / 255, "v h w c -> 1 v c h w")
    return reconstructor.field(pixels)
