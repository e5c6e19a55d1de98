"""The diffusers folder layout: model_index.json with unet/, vae/, text_encoder/, tokenizer/, scheduler/.

spacetime's modules use diffusers' parameter names, so loading is "read config → build on the meta
device → assign the tensors", and saving writes files diffusers' `from_pretrained` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from spacetime.errors import CheckpointError
from spacetime.formats import modelscope
from spacetime.formats.clip_tokenizer import Tokenizer
from spacetime.formats.weights import (
    atomic_folder,
    build_empty,
    load_into,
    read_component,
    read_json,
)
from spacetime.models.clip import CLIPTextConfig, CLIPTextModel
from spacetime.models.inflate import InflationSpec, inflate, spec_from_dict, spec_to_dict
from spacetime.models.text import TextEncoder
from spacetime.models.unet import UNet2DCondition, UNetConfig
from spacetime.models.vae import AutoencoderKL, VAEConfig
from spacetime.sampling import NoiseSchedule

if TYPE_CHECKING:
    from spacetime.models.video_vae import VideoVAE


@dataclass
class Components:
    """The parts of a latent diffusion model; pipelines are thin loops over these."""

    unet: UNet2DCondition
    vae: AutoencoderKL | VideoVAE  # a video VAE (temporal decoder) for clips, else per frame
    text_encoder: TextEncoder
    schedule: NoiseSchedule


def _config(cls, folder: Path):
    try:
        return cls.from_diffusers(read_json(folder / "config.json"))
    except ValueError as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from None


# The key of a `UNet2DConditionModel` config.json under which spacetime records the inflation of
# an inflated U-Net (e.g. MVDream's cameras and cross-view attention), so that loading rebuilds the
# same layers. diffusers ignores the key (it warns) and loads the 2D weights alone.
INFLATION_KEY = "spacetime_inflation"


def build_unet(
    cfg: UNetConfig, sd: dict[str, Tensor], spec: InflationSpec | None = None
) -> UNet2DCondition:
    """A U-Net (inflated to `spec`, if given) built on the meta device and filled strictly."""
    factory = (lambda: UNet2DCondition(cfg)) if spec is None else (
        lambda: inflate(UNet2DCondition(cfg), spec)
    )  # fmt: skip
    return load_into(build_empty(factory), sd, "unet")


def unet_config(unet: UNet2DCondition) -> dict:
    """The config.json of a U-Net: diffusers' 2D one, plus its inflation if it has one."""
    config = unet.config.to_diffusers()
    spec: InflationSpec | None = unet.inflation
    if spec is not None:
        config[INFLATION_KEY] = spec_to_dict(spec)
    return config


def load_unet(folder: Path) -> UNet2DCondition:
    """A `unet/` folder: an image U-Net, one spacetime inflated (`spacetime_inflation` in its
    config.json, e.g. a multi-view U-Net), a ModelScope `UNet3DConditionModel` (loaded
    inflated), or the `MultiViewUNetModel` of MVDream's diffusers-style port."""
    config = read_json(folder / "config.json")
    from spacetime.formats import mvdream  # it builds on this module

    if mvdream.is_multiview_unet(config):
        return mvdream.load_unet_folder(folder, config)
    try:
        if modelscope.is_unet3d(config):
            cfg, spec = modelscope.configs_from_unet3d(config)
        else:
            config = dict(config)
            inflation = config.pop(INFLATION_KEY, None)
            if inflation is not None and not isinstance(inflation, dict):
                raise ValueError(f"{INFLATION_KEY} must be a mapping, got {inflation!r}")
            cfg = UNetConfig.from_diffusers(config)
            spec = None if inflation is None else spec_from_dict(inflation)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from None
    sd = read_component(folder, "diffusion_pytorch_model")
    if modelscope.is_unet3d(config):
        return modelscope.build_unet3d(cfg, spec, sd)
    return build_unet(cfg, sd, spec)


def build_vae(cfg: VAEConfig, sd: dict[str, Tensor]) -> AutoencoderKL:
    return load_into(build_empty(lambda: AutoencoderKL(cfg)), sd, "vae")


def build_text_encoder(config: dict, sd: dict[str, Tensor], tokenizer) -> TextEncoder:
    """CLIP's text tower from a transformers config dict and weights (no random init)."""
    cfg = CLIPTextConfig.from_dict(config)
    model = build_empty(lambda: CLIPTextModel(cfg))
    # position_ids is a pure function of length (never loaded); transformers 4 nests the weights
    # under `text_model.`, transformers 5 does not: accept either.
    sd = {
        _with_prefix(k, "text_model.", False): v
        for k, v in sd.items()
        if not k.endswith("position_ids")
    }
    load_into(model, sd, "text_encoder")
    return TextEncoder(tokenizer, model.eval())


def _with_prefix(key: str, prefix: str, wanted: bool) -> str:
    has = key.startswith(prefix)
    if wanted and not has:
        return prefix + key
    return key[len(prefix) :] if has and not wanted else key


def load_tokenizer(folder: Path) -> Tokenizer:
    if not any((folder / f).is_file() for f in ("vocab.json", "tokenizer.json")):
        raise CheckpointError(f"missing tokenizer: expected {folder}/vocab.json or tokenizer.json")
    return Tokenizer.from_folder(folder)


def load_diffusers(root: Path) -> Components:
    """Load a diffusers-layout Stable Diffusion folder, or a ModelScope text-to-video one
    (`TextToVideoSDPipeline`: the same parts with a `UNet3DConditionModel`)."""
    index = read_json(root / "model_index.json")
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if part not in index or not (root / part).is_dir():
            raise CheckpointError(f"{root} lacks the {part}/ component that model_index.json needs")
    unet = load_unet(root / "unet")
    if read_json(root / "vae" / "config.json").get("_class_name") == "AutoencoderKLTemporalDecoder":
        from spacetime.formats.video_vae import load_video_vae

        vae = load_video_vae(root / "vae")
    else:
        vae = build_vae(
            _config(VAEConfig, root / "vae"),
            read_component(root / "vae", "diffusion_pytorch_model"),
        )
    text = build_text_encoder(
        read_json(root / "text_encoder" / "config.json"),
        read_component(root / "text_encoder", "model"),
        load_tokenizer(root / "tokenizer"),
    )
    try:
        schedule = NoiseSchedule.from_diffusers_config(
            read_json(root / "scheduler" / "scheduler_config.json")
        )
    except ValueError as e:
        raise CheckpointError(f"{root / 'scheduler' / 'scheduler_config.json'}: {e}") from None
    return Components(unet.eval(), vae.eval(), text, schedule)


def save_component(folder: Path, config: dict, sd: dict[str, Tensor], stem: str) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    save_file(sd, str(folder / f"{stem}.safetensors"), metadata={"format": "pt"})


def save_diffusers(components: Components, root: Path, overwrite: bool = False) -> Path:
    """Write a folder that diffusers' StableDiffusionPipeline.from_pretrained loads.

    The folder is assembled next to its destination and renamed into place, so an error never
    leaves half a model behind.
    """

    def fill(tmp: Path) -> None:
        c = components
        # A ModelScope-inflated U-Net saves as diffusers' 3D U-Net in a text-to-video pipeline.
        video = modelscope.is_modelscope(c.unet)
        config = modelscope.unet3d_config(c.unet) if video else unet_config(c.unet)
        save_component(tmp / "unet", config, c.unet.state_dict(), "diffusion_pytorch_model")
        save_component(
            tmp / "vae", c.vae.config.to_diffusers(), c.vae.state_dict(), "diffusion_pytorch_model"
        )
        save_component(
            tmp / "text_encoder", c.text_encoder.model.config.to_dict(),
            c.text_encoder.model.state_dict(), "model",
        )  # fmt: skip
        c.text_encoder.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(
            json.dumps(c.schedule.to_diffusers_config(), indent=2) + "\n"
        )
        index = {
            "_class_name": modelscope.PIPELINE_CLASS_NAME if video else "StableDiffusionPipeline",
            "_diffusers_version": "0.30.0",
            "unet": ["diffusers", config["_class_name"]],
            "vae": ["diffusers", c.vae.config.to_diffusers()["_class_name"]],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", c.schedule.to_diffusers_config()["_class_name"]],
        }
        if not video:  # TextToVideoSDPipeline has no safety checker
            index.update(
                safety_checker=[None, None], feature_extractor=[None, None],
                requires_safety_checker=False,
            )  # fmt: skip
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    return atomic_folder(Path(root), fill, overwrite)
