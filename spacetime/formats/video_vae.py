"""SVD-style video VAE folders: diffusers' `AutoencoderKLTemporalDecoder` layout (config.json +
diffusion_pytorch_model.safetensors), read strictly and written so diffusers reads them back."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from spacetime.errors import CheckpointError
from spacetime.formats.diffusers import save_component
from spacetime.formats.weights import (
    atomic_folder,
    build_empty,
    load_into,
    read_component,
    read_json,
)
from spacetime.models.video_vae import VideoVAE, VideoVAEConfig

WEIGHTS = "diffusion_pytorch_model"


def build_video_vae(cfg: VideoVAEConfig, sd: dict[str, Tensor]) -> VideoVAE:
    """A video VAE built on the meta device and filled from `sd`, every key accounted for."""
    return load_into(build_empty(lambda: VideoVAE(cfg)), sd, "video vae")


def load_video_vae(folder: str | Path) -> VideoVAE:
    """Load a video VAE component folder, or a pipeline folder holding one in vae/ (as SVD's)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    try:
        cfg = VideoVAEConfig.from_diffusers(read_json(folder / "config.json"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from None
    return build_video_vae(cfg, read_component(folder, WEIGHTS)).eval()


def save_video_vae(vae: VideoVAE, folder: str | Path, overwrite: bool = False) -> Path:
    """Write `vae` as a component folder; diffusers' `AutoencoderKLTemporalDecoder` loads it
    and computes the same when the config has none of our extra fields (no post-quant conv, 32
    norm groups, a mid block of layers_per_block, no shift), as for SVD's own weights.

    The folder is assembled next to its destination and renamed into place, so an error never
    leaves half a model behind.
    """
    return atomic_folder(
        Path(folder),
        lambda tmp: save_component(tmp, vae.config.to_diffusers(), vae.state_dict(), WEIGHTS),
        overwrite,
    )
