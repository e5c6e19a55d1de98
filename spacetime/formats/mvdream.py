"""MVDream's published weights (Shi et al. 2023) in their two circulating layouts.

- The original single file (`sd-v2.1-base-4view.pt`, `sd-v1.5-4view.pt`; github bytedance/MVDream):
  the state dict of its `LatentDiffusionInterface`, i.e. an SD checkpoint in the CompVis layout
  (`model.diffusion_model.` U-Net, `first_stage_model.` VAE, `cond_stage_model.` text encoder:
  OpenCLIP ViT-H for 2.1, OpenAI CLIP for 1.5) plus the U-Net's `camera_embed.{0,2}` MLP and the
  noise schedule's buffers. The multi-view U-Net adds no layer: its self-attention spans views.
- The diffusers-style port users share (ashawkey/mvdream-sd2.1-diffusers): diffusers' vae/,
  text_encoder/, tokenizer/, scheduler/ and a `unet/` of class `MultiViewUNetModel`, whose
  config.json holds the LDM constructor arguments and whose weights keep the LDM module names
  (`input_blocks.…`, `camera_embed.…`, no prefix). A `unet/` keyed by diffusers' names loads too.

Both build spacetime's SD U-Net inflated with `MVDream.published()`, and every tensor of the file
is either loaded or named here as unused (the OpenCLIP block after the penultimate layer, its
contrastive head, the schedule buffers, which are checked against SD's schedule); any other key is
an error that names it. `to_original` writes the single-file layout back (tools and tests build
checkpoints with it).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from spacetime.errors import CheckpointError
from spacetime.formats.clip_tokenizer import Tokenizer
from spacetime.formats.diffusers import Components, build_text_encoder, build_vae
from spacetime.formats.original import (
    OPEN_CLIP_PREFIX,
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    infer_text_encoder_config,
    infer_unet_config,
    infer_vae_config,
    text_encoder_diffusers_to_original,
    text_encoder_original_to_diffusers,
    unet_diffusers_to_original,
    unet_original_to_diffusers,
    vae_diffusers_to_original,
    vae_original_to_diffusers,
)
from spacetime.formats.tokenizer import clip_tokenizer
from spacetime.formats.weights import atomic_write, build_empty, load_into, read_component
from spacetime.models.inflate import MVDream, inflate
from spacetime.models.text import TextEncoder
from spacetime.models.unet import UNet2DCondition, UNetConfig
from spacetime.models.vae import VAEConfig
from spacetime.sampling import NoiseSchedule

CLASS_NAME = "MultiViewUNetModel"  # the port's unet/config.json class
CAMERA_KEYS = tuple(f"camera_embed.{i}.{p}" for i in (0, 2) for p in ("weight", "bias"))
# MVDream trains and samples 4 views of 256 px: 32 x 32 latents (its config's image_size: 32).
SAMPLE_SIZE = 32
# LatentDiffusionInterface.register_schedule's buffers, in its order; all follow from the betas.
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)  # fmt: skip
# OpenCLIP's contrastive head (unused by diffusion) and, in old open_clip versions, the causal
# mask as a persistent buffer (the text model builds its own).
_OPEN_CLIP_UNUSED = ("text_projection", "logit_scale", "attn_mask")
_OPEN_CLIP_PAD = "!"  # open_clip.tokenize pads with id 0, which is "!" (SD 2.x's tokenizer too)
_GELU = "gelu"  # OpenCLIP's activation (OpenAI CLIP's is quick_gelu)
_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature, written for completeness


def is_original(sd: Mapping[str, Tensor]) -> bool:
    """Whether a single-file state dict is MVDream's: an SD checkpoint with a camera MLP."""
    return any(key.startswith(UNET_PREFIX + "camera_embed.") for key in sd)


def is_multiview_unet(config: Mapping) -> bool:
    """Whether a `unet/config.json` is the diffusers-style port's `MultiViewUNetModel`."""
    return config.get("_class_name") == CLASS_NAME


# --- the U-Net --------------------------------------------------------------------------------


def build_multiview_unet(
    unet: Mapping[str, Tensor], sample_size: int = SAMPLE_SIZE, ldm_config: Mapping | None = None
) -> UNet2DCondition:
    """Spacetime's U-Net inflated with `MVDream.published()` from the LDM-named weights of
    MVDream's `MultiViewUNetModel` (no `model.diffusion_model.` prefix). Sizes come from the
    tensor shapes; heads follow SD's releases (64-wide, 8 heads for SD 1.x's 768-wide text) or,
    given, the LDM constructor arguments (`num_head_channels` / `num_heads`), which must also
    agree with the shapes."""
    camera = {key: unet[key] for key in CAMERA_KEYS if key in unet}
    missing = [key for key in CAMERA_KEYS if key not in camera]
    if missing:
        raise CheckpointError(
            "not an MVDream U-Net: it lacks the camera MLP (missing "
            f"{', '.join(missing)}); a plain SD U-Net has no camera conditioning"
        )
    extra = sorted(k for k in unet if k.startswith("camera_embed.") and k not in camera)
    if extra:
        raise CheckpointError(f"MVDream U-Net: unexpected camera keys {', '.join(extra)}")
    rest = {key: tensor for key, tensor in unet.items() if not key.startswith("camera_embed.")}
    config = infer_unet_config(rest, "")
    config["sample_size"] = sample_size
    if ldm_config is not None:
        config["attention_head_dim"] = _checked_heads(ldm_config, config)
    try:
        cfg = UNetConfig.from_diffusers(config)
    except ValueError as e:
        raise CheckpointError(f"MVDream U-Net: {e}") from None
    model = build_empty(lambda: inflate(UNet2DCondition(cfg), MVDream.published()))
    # Checked in the file's own names, which a renamed key in an error would hide.
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("camera_embed.")}
    expected = {*unet_diffusers_to_original(own, prefix=""), *CAMERA_KEYS}
    missing, unexpected = sorted(expected - set(unet)), sorted(set(unet) - expected)
    if missing or unexpected:
        parts = [f"{what} keys {_listing(keys)}" for what, keys in
                 (("missing", missing), ("unexpected", unexpected)) if keys]  # fmt: skip
        raise CheckpointError("MVDream U-Net: " + "; ".join(parts))
    weights = {**unet_original_to_diffusers(rest, prefix=""), **camera}
    return load_into(model, weights, "unet")


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _checked_heads(ldm: Mapping, config: Mapping) -> list[int] | int:
    """Heads per level from LDM's constructor arguments (`num_head_channels`, else `num_heads`,
    else the inferred ones), after checking the sizes they state against the weights'."""
    channels = list(config["block_out_channels"])
    found = {
        "model_channels x channel_mult": channels,
        "context_dim": config["cross_attention_dim"],
        "num_res_blocks": config["layers_per_block"],
    }
    stated = {
        "model_channels x channel_mult": [
            ldm.get("model_channels", 0) * m for m in ldm.get("channel_mult", ())
        ],
        "context_dim": ldm.get("context_dim"),
        "num_res_blocks": ldm.get("num_res_blocks"),
    }
    for name, value in stated.items():
        if value not in (None, [], found[name]):
            raise CheckpointError(
                f"MVDream U-Net: config {name} gives {value}, the weights {found[name]}"
            )
    width, heads = ldm.get("num_head_channels", -1), ldm.get("num_heads", -1)
    if width not in (-1, None):
        return [max(1, c // width) for c in channels]
    if heads not in (-1, None):
        return heads
    return config["attention_head_dim"]


def unet_to_original(unet: UNet2DCondition) -> dict[str, Tensor]:
    """The inverse of `build_multiview_unet`: LDM names, `camera_embed.*` included, no prefix."""
    if unet.inflation != MVDream.published():
        raise CheckpointError(
            f"only a U-Net inflated with MVDream.published() has MVDream's layout, got "
            f"{unet.inflation!r}"
        )
    sd = unet.state_dict()
    camera = {key: sd.pop(key) for key in CAMERA_KEYS}
    return {**unet_diffusers_to_original(sd, prefix=""), **camera}


# --- the text encoders ------------------------------------------------------------------------

_OPEN_CLIP_BLOCK = (  # OpenCLIP resblock part -> transformers CLIPEncoderLayer part
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
)
_OPEN_CLIP_WHOLE = (
    ("token_embedding.weight", "embeddings.token_embedding.weight"),
    ("positional_embedding", "embeddings.position_embedding.weight"),
    ("ln_final.weight", "final_layer_norm.weight"),
    ("ln_final.bias", "final_layer_norm.bias"),
)
_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")


def open_clip_to_clip(text: Mapping[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """OpenCLIP's text tower (keys after `cond_stage_model.model.`) as a transformers
    CLIPTextModel (config, weights) that stops at the penultimate block, as SD 2.x and MVDream
    read it (FrozenOpenCLIPEmbedder, layer="penultimate"): the last block is not loaded."""
    blocks = {int(m.group(1)) for key in text if (m := _RESBLOCK.fullmatch(key))}
    if not blocks or blocks != set(range(len(blocks))):
        raise CheckpointError(
            f"OpenCLIP text encoder: expected transformer.resblocks.0..N, got blocks {sorted(blocks)}"
        )
    used = len(blocks) - 1
    out: dict[str, Tensor] = {}
    stray = []
    for key, tensor in text.items():
        found = _RESBLOCK.fullmatch(key)
        if found is None:
            new = dict(_OPEN_CLIP_WHOLE).get(key)
            if new is not None:
                out[f"text_model.{new}"] = tensor
            elif key not in _OPEN_CLIP_UNUSED:
                stray.append(key)
            continue
        index, part = int(found.group(1)), found.group(2)
        layer = f"text_model.encoder.layers.{index}."
        if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = part.rsplit("_", 1)[1]  # weight | bias
            if tensor.shape[0] % 3:
                raise CheckpointError(f"OpenCLIP text encoder: {key} does not split into q, k, v")
            if index < used:
                for name, chunk in zip(("q", "k", "v"), tensor.chunk(3), strict=True):
                    out[f"{layer}self_attn.{name}_proj.{kind}"] = chunk
            continue
        renamed = next(
            (new + part[len(old) :] for old, new in _OPEN_CLIP_BLOCK if part.startswith(old)), None
        )
        if renamed is None:
            stray.append(key)
        elif index < used:
            out[layer + renamed] = tensor
    if stray:
        raise CheckpointError(
            f"OpenCLIP text encoder: unexpected keys {', '.join(OPEN_CLIP_PREFIX + k for k in stray)}"
        )
    try:
        tokens = out["text_model.embeddings.token_embedding.weight"]
        fc1 = out["text_model.encoder.layers.0.mlp.fc1.weight"]
        positions = out["text_model.embeddings.position_embedding.weight"]
    except KeyError as e:
        raise CheckpointError(f"OpenCLIP text encoder: no tensor for {e.args[0]!r}") from None
    hidden = tokens.shape[1]
    config = {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": tokens.shape[0],
        "hidden_size": hidden,
        "intermediate_size": fc1.shape[0],
        "projection_dim": hidden,
        "num_hidden_layers": used,
        "num_attention_heads": max(1, hidden // 64),  # OpenCLIP's text towers: 64-wide heads
        "max_position_embeddings": positions.shape[0],
        "hidden_act": _GELU,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 0,
    }
    return config, out


def clip_to_open_clip(text: TextEncoder) -> dict[str, Tensor]:
    """The inverse of `open_clip_to_clip` (no prefix). The last OpenCLIP block, which reading at
    the penultimate layer never runs, and the contrastive head are written as zeros."""
    sd = {k.removeprefix("text_model."): v for k, v in text.model.state_dict().items()}
    out = {old: sd[new] for old, new in _OPEN_CLIP_WHOLE}
    layers = text.model.config.num_hidden_layers
    for index in range(layers + 1):
        prefix = f"encoder.layers.{min(index, layers - 1)}."
        layer = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if index == layers:
            layer = {k: torch.zeros_like(v) for k, v in layer.items()}
        block = f"transformer.resblocks.{index}."
        for kind in ("weight", "bias"):
            qkv = [layer[f"self_attn.{n}_proj.{kind}"] for n in ("q", "k", "v")]
            out[f"{block}attn.in_proj_{kind}"] = torch.cat(qkv)
            for old, new in _OPEN_CLIP_BLOCK:
                out[f"{block}{old}{kind}"] = layer[f"{new}{kind}"]
    hidden = text.model.config.hidden_size
    out["text_projection"] = torch.zeros(hidden, hidden)
    out["logit_scale"] = torch.tensor(_LOGIT_SCALE)
    return out


def open_clip_tokenizer() -> Tokenizer:
    """OpenAI CLIP's byte-pair vocabulary (open_clip ships the same file), padded with "!" (id 0)
    as open_clip.tokenize pads; the padded positions reach the U-Net's cross-attention."""
    backend = clip_tokenizer(None)
    backend.pad_token = _OPEN_CLIP_PAD
    return Tokenizer.wrap(backend)


def _text_encoder(sd: Mapping[str, Tensor]) -> TextEncoder:
    if any(key.startswith(OPEN_CLIP_PREFIX) for key in sd):  # sd-v2.1-base-4view
        text = {
            k[len(OPEN_CLIP_PREFIX) :]: v for k, v in sd.items() if k.startswith(OPEN_CLIP_PREFIX)
        }
        config, weights = open_clip_to_clip(text)
        tokenizer = open_clip_tokenizer()
    else:  # sd-v1.5-4view: OpenAI CLIP ViT-L, keyed as transformers'
        config, weights = infer_text_encoder_config(sd), text_encoder_original_to_diffusers(sd)
        tokenizer = Tokenizer.wrap(clip_tokenizer(None))
    if len(tokenizer) > config["vocab_size"]:
        raise CheckpointError(
            f"text encoder: {config['vocab_size']} token embeddings, but CLIP's tokenizer has "
            f"{len(tokenizer)} tokens"
        )
    return build_text_encoder(config, weights, tokenizer)


# --- the noise schedule -----------------------------------------------------------------------


def schedule_buffers(schedule: NoiseSchedule) -> dict[str, Tensor]:
    """LatentDiffusionInterface.register_schedule's buffers for a (scaled-)linear schedule, in
    float64 then stored as float32, as LDM computes them."""
    n = schedule.num_train_timesteps
    if schedule.beta_schedule == "scaled_linear":
        betas = (
            torch.linspace(schedule.beta_start**0.5, schedule.beta_end**0.5, n, dtype=torch.float64)
            ** 2
        )
    elif schedule.beta_schedule == "linear":
        betas = torch.linspace(schedule.beta_start, schedule.beta_end, n, dtype=torch.float64)
    else:
        raise CheckpointError(f"MVDream's layout has no {schedule.beta_schedule!r} schedule")
    abar = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    variance = betas * (1 - prev) / (1 - abar)
    values = (
        betas, abar, prev, abar.sqrt(), (1 - abar).sqrt(), (1 - abar).log(), (1 / abar).sqrt(),
        (1 / abar - 1).sqrt(), variance, variance.clamp(min=1e-20).log(),
        betas * prev.sqrt() / (1 - abar), (1 - prev) * (1 - betas).sqrt() / (1 - abar),
    )  # fmt: skip
    return {name: v.float() for name, v in zip(SCHEDULE_BUFFERS, values, strict=True)}


def _check_schedule(sd: Mapping[str, Tensor], schedule: NoiseSchedule) -> None:
    """The file's abar_t must be the schedule spacetime samples and distils with."""
    stored = sd.get("alphas_cumprod")
    if stored is None:
        return
    expected = schedule.alphas_cumprod
    # fp16 copies of a file round abar to ~1e-3; another schedule (linear) is off by far more
    close = torch.allclose(stored.float(), expected, rtol=2e-3, atol=1e-5)
    if stored.shape != expected.shape or not close:
        raise CheckpointError(
            "MVDream checkpoint: its alphas_cumprod are not SD's scaled-linear schedule "
            f"(betas {schedule.beta_start}..{schedule.beta_end}, {schedule.num_train_timesteps} "
            "steps) that its config and spacetime use"
        )


# --- whole checkpoints ------------------------------------------------------------------------


def components_from_original(sd: Mapping[str, Tensor]) -> Components:
    """Components from the state dict of MVDream's original single file."""
    text_prefix = (
        OPEN_CLIP_PREFIX if any(k.startswith(OPEN_CLIP_PREFIX) for k in sd) else TEXT_ENCODER_PREFIX
    )
    prefixes = (UNET_PREFIX, VAE_PREFIX, text_prefix)
    stray = sorted(k for k in sd if not k.startswith(prefixes) and k not in SCHEDULE_BUFFERS)
    if stray:
        raise CheckpointError(
            f"MVDream checkpoint: unexpected keys {_listing(stray)} (expected {', '.join(prefixes)}* and "
            "the noise schedule's buffers)"
        )
    schedule = NoiseSchedule()  # MVDream's configs: linear_start 0.00085, linear_end 0.012, eps
    _check_schedule(sd, schedule)
    unet = {k[len(UNET_PREFIX) :]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    try:
        vae_cfg = VAEConfig.from_diffusers(infer_vae_config(sd))
    except ValueError as e:
        raise CheckpointError(f"VAE: {e}") from None
    return Components(
        build_multiview_unet(unet).eval(),
        build_vae(vae_cfg, vae_original_to_diffusers(sd)).eval(),
        _text_encoder(sd),
        schedule,
    )


def to_original(components: Components) -> dict[str, Tensor]:
    """A published-layout MVDream model as the state dict of MVDream's original single file:
    the key set its `LatentDiffusionInterface.load_state_dict` expects. The text encoder is
    written as OpenCLIP's (sd-v2.1) when it uses GELU, else as OpenAI CLIP's (sd-v1.5)."""
    c = components
    sd = {UNET_PREFIX + k: v for k, v in unet_to_original(c.unet).items()}
    sd.update(vae_diffusers_to_original(c.vae.state_dict()))
    if c.text_encoder.model.config.hidden_act == _GELU:
        sd.update({OPEN_CLIP_PREFIX + k: v for k, v in clip_to_open_clip(c.text_encoder).items()})
    else:
        sd.update(text_encoder_diffusers_to_original(c.text_encoder.model.state_dict()))
    sd.update(schedule_buffers(c.schedule))
    return sd


def save_original(components: Components, path: str | os.PathLike, half: bool = False) -> Path:
    """Write `to_original(components)` as one .safetensors (.pt/.ckpt: torch.save), atomically;
    `half` stores the networks' weights as fp16 (the schedule buffers stay fp32)."""
    path = Path(path)
    tensors = {}
    for key, tensor in to_original(components).items():
        tensor = tensor.detach().cpu().contiguous()
        halve = half and tensor.is_floating_point() and key not in SCHEDULE_BUFFERS
        tensors[key] = tensor.half() if halve else tensor.clone()
    if path.suffix.lower() == ".safetensors":
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    elif path.suffix.lower() in (".pt", ".ckpt", ".pth"):
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))
    else:
        raise CheckpointError(f"{path}: write MVDream checkpoints as .safetensors, .pt or .ckpt")
    return path


# --- the diffusers-style port ------------------------------------------------------------------

# The constructor arguments of MultiViewUNetModel (MVDream's and the port's own class); those in
# the second table switch on what the published U-Net does not have, so must keep their value.
# (num_res_blocks, channel_mult, context_dim, heads: checked against the weights.)
_PORT_KEYS = {
    "image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks",
    "attention_resolutions", "dropout", "channel_mult", "conv_resample", "dims", "num_classes",
    "use_checkpoint", "use_fp16", "use_bf16", "num_heads", "num_head_channels",
    "num_heads_upsample", "use_scale_shift_norm", "resblock_updown", "use_new_attention_order",
    "use_spatial_transformer", "transformer_depth", "context_dim", "n_embed", "legacy",
    "disable_self_attentions", "num_attention_blocks", "disable_middle_self_attn",
    "use_linear_in_transformer", "adm_in_channels", "camera_dim", "ip_dim", "ip_weight",
}  # fmt: skip
_PORT_FIXED = {
    "conv_resample": True, "dims": 2, "num_classes": None, "use_scale_shift_norm": False,
    "resblock_updown": False, "use_spatial_transformer": True, "n_embed": None,
    "legacy": False, "disable_self_attentions": None, "num_attention_blocks": None,
    "disable_middle_self_attn": False, "adm_in_channels": None, "camera_dim": 16, "ip_dim": 0,
}  # fmt: skip


def load_unet_folder(folder: Path, config: Mapping) -> UNet2DCondition:
    """The port's `unet/` (config.json of `MultiViewUNetModel`, weights in LDM or diffusers names)."""
    where = folder / "config.json"
    values = {k: v for k, v in config.items() if not k.startswith("_")}
    unknown = sorted(set(values) - _PORT_KEYS)
    if unknown:
        raise CheckpointError(
            f"{where}: unsupported {CLASS_NAME} config keys: {', '.join(unknown)}"
        )
    for key, allowed in _PORT_FIXED.items():
        if key in values and values[key] != allowed:
            what = " (ImageDream's image prompt)" if key == "ip_dim" else ""
            raise CheckpointError(
                f"{where}: unsupported {CLASS_NAME} config {key}={values[key]!r}{what}; only "
                f"{allowed!r}"
            )
    sd = read_component(folder, "diffusion_pytorch_model")
    if "conv_in.weight" in sd:  # diffusers' names: to LDM's, so one path builds the U-Net
        camera = {k: v for k, v in sd.items() if k.startswith("camera_embed.")}
        rest = {k: v for k, v in sd.items() if not k.startswith("camera_embed.")}
        sd = {**unet_diffusers_to_original(rest, prefix=""), **camera}
    elif "input_blocks.0.0.weight" not in sd:
        raise CheckpointError(
            f"{folder}: expected MVDream U-Net weights (input_blocks.* as MVDream names them, or "
            "diffusers' conv_in, down_blocks.*)"
        )
    try:
        return build_multiview_unet(sd, int(values.get("image_size") or SAMPLE_SIZE), values)
    except CheckpointError as e:
        raise CheckpointError(f"{folder}: {e}") from None
