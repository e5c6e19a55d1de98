"""LoRA files (Hu et al. 2021) in the ecosystem's layouts, renamed to spacetime's layer names.

Readers only rename: they return {"unet.<module>" | "text_encoder.<module>": LoraFactors} in the
names of spacetime's modules (which are diffusers'), and spacetime.models.lora applies them. Keys
are checked against the model there, so nothing here decides whether a file fits.

- kohya / A1111: `lora_unet_<module path, dots as _>` and `lora_te_text_model_<…>`, each with
  `.lora_down.weight`, `.lora_up.weight` and `.alpha` (ΔW = alpha / rank · up @ down). U-Net paths
  come in diffusers' names or in the original (CompVis) ones (`input_blocks_1_1_proj_in`), mapped
  as single-file checkpoints are (spacetime.formats.original).
- PEFT / diffusers: `unet.<module>.lora_A.weight` (down) and `.lora_B.weight` (up),
  `text_encoder.…` likewise; alpha from the adapter config diffusers stores in the file's
  metadata (`lora_adapter_metadata`: `unet.lora_alpha`, `unet.alpha_pattern`, …), else alpha =
  rank.
- diffusers' older attention-processor names (`….processor.to_q_lora.down.weight`,
  `….lora.down.weight`, `….lora_linear_layer.down.weight`), which AnimateDiff's motion LoRAs use:
  diffusers' copies under `unet.`, the originals unprefixed and nested as the original motion
  modules are (`…temporal_transformer…attention_blocks.0.processor.to_q_lora.down.weight`). No
  alpha: scale 1.

`save_lora` writes what spacetime trains in the PEFT/diffusers layout, with the adapter config in
the metadata as diffusers' `save_lora_weights` does, so `load_lora_weights` reads it back.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from torch import Tensor

from spacetime.errors import CheckpointError
from spacetime.formats import animatediff
from spacetime.formats.original import unet_original_names
from spacetime.formats.weights import atomic_write, read_weights_file
from spacetime.models.lora import LoraFactors

NETWORKS = ("unet", "text_encoder")
METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
PEFT_DEFAULT_ALPHA = 8  # peft's LoraConfig.lora_alpha when a stored config leaves it out

_KOHYA = re.compile(
    r"lora_(?P<net>unet|te)_(?P<path>[^.]+)\.(?P<part>lora_down\.weight|lora_up\.weight|alpha)"
)
_DIFFUSERS = re.compile(
    r"(?P<path>.+?)\.(?:lora_(?P<peft>[AB])\.weight"
    r"|(?:lora|lora_linear_layer)\.(?P<old>down|up)\.weight"
    r"|(?:processor\.)?(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<proc>down|up)\.weight)"
)
# diffusers' attention-processor LoRAs name the attention, then the projection
_PROJECTIONS = {
    "unet": {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},
    "text_encoder": {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"},
}
_ROLES = {"A": "down", "B": "up", "lora_down.weight": "down", "lora_up.weight": "up"}
# Marks of files for other model families or adapter kinds, and what to call them.
_FOREIGN = (
    (("lora_te1_", "lora_te2_", "text_encoder_2."), "an SDXL LoRA (two text encoders)"),
    ((".dora_scale", ".lora_magnitude_vector"), "a DoRA adapter, which spacetime does not read"),
    ((".hada_", ".lokr_"), "a LyCORIS LoHa/LoKr adapter, which spacetime does not read"),
    ((".lora_B.bias",), "a LoRA with bias terms, which spacetime does not read"),
)
_TEXT_MODEL = "text_model."  # transformers 4 nests CLIP's layers under it; spacetime does not


def read_lora(
    path: str | os.PathLike, layers: Mapping[str, Iterable[str]]
) -> dict[str, LoraFactors]:
    """The layers of a LoRA file, keyed "network.module"; `layers` lists each network's layer
    names (spacetime.models.lora.Adapters.layer_names), which kohya's underscored names need."""
    sd, metadata = read_weights_file(path)
    try:
        return lora_factors(sd, metadata, layers)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def lora_factors(
    sd: Mapping[str, Tensor], metadata: Mapping[str, str], layers: Mapping[str, Iterable[str]]
) -> dict[str, LoraFactors]:
    """`read_lora` on a state dict and its safetensors metadata."""
    for marks, what in _FOREIGN:
        found = [key for key in sd if any(mark in key for mark in marks)]
        if found:
            raise CheckpointError(f"{what}: {', '.join(found[:3])}")
    config = _adapter_config(metadata)
    names = _underscored(layers)
    parts: dict[str, dict[str, Tensor | float]] = {}  # "network.module" → down / up / alpha
    sources: dict[str, str] = {}
    for key, tensor in sd.items():
        if kohya := _KOHYA.fullmatch(key):
            network = "unet" if kohya["net"] == "unet" else "text_encoder"
            path = kohya["path"]
            if network == "text_encoder":
                path = path.removeprefix(_TEXT_MODEL.replace(".", "_"))
            layer = f"{network}.{names[network].get(path, path)}"
            role = _ROLES.get(kohya["part"], "alpha")
            source = key.partition(".")[0]
        else:
            layer, role, source = _diffusers_layer(key)
        sources[layer] = source
        parts.setdefault(layer, {})[role] = tensor
    out = {}
    for layer, found in parts.items():
        if "down" not in found or "up" not in found:
            missing = "down" if "down" not in found else "up"
            raise CheckpointError(f"{sources[layer]} has no {missing} factor")
        down, up = found["down"], found["up"]
        rank = down.shape[0]
        if "alpha" in found:
            alpha = float(found["alpha"])
            scale = alpha / rank
        else:
            scale = _peft_scale(config, sources[layer], rank)
        out[layer] = LoraFactors(down, up, scale, sources[layer])
    return out


def _diffusers_layer(key: str) -> tuple[str, str, str]:
    """(spacetime layer, "down" | "up", the file's layer name) of a PEFT or diffusers key."""
    network, _, rest = key.partition(".")
    if network not in NETWORKS:
        network, rest = "unet", key  # unprefixed: attention-processor files, motion LoRAs
    if network == "unet" and animatediff.is_original_key(rest):
        rest = animatediff.rename_key(rest)
    found = _DIFFUSERS.fullmatch(rest)
    if found is None:
        raise CheckpointError(
            f"not a LoRA key: {key!r} (expected lora_A/lora_B, lora_down/lora_up or "
            "to_q_lora.down-style names)"
        )
    path = found["path"]
    source = f"{network}.{path}"
    if found["proj"]:
        path = f"{path}.{_PROJECTIONS[network][found['proj']]}"
    if network == "text_encoder":
        path = path.removeprefix(_TEXT_MODEL)
    role = _ROLES[found["peft"]] if found["peft"] else found["old"] or found["proc"]
    return f"{network}.{path}", role, source


def _underscored(layers: Mapping[str, Iterable[str]]) -> dict[str, dict[str, str]]:
    """{network: {kohya's name (dots as underscores): layer name}}, the U-Net's in both layouts."""
    names = {network: {n.replace(".", "_"): n for n in layers[network]} for network in layers}
    if "unet" in layers:
        original = unet_original_names(layers["unet"])
        names["unet"].update({old.replace(".", "_"): new for new, old in original.items()})
    return names


def _adapter_config(metadata: Mapping[str, str]) -> dict:
    """The LoraConfig fields diffusers stores per network ("unet.lora_alpha", …), or {}."""
    text = metadata.get(METADATA_KEY)
    if not text:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"metadata {METADATA_KEY} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"metadata {METADATA_KEY}: expected a mapping")
    for network in NETWORKS:
        if config.get(f"{network}.use_dora"):
            raise CheckpointError("a DoRA adapter (use_dora), which spacetime does not read")
    return config


def _peft_scale(config: Mapping, source: str, rank: int) -> float:
    """alpha / rank as peft computes it from a stored LoraConfig: alpha_pattern's first regex
    that matches the end of the layer's name, else lora_alpha; alpha = rank without a config."""
    network, _, path = source.partition(".")
    own = {k[len(network) + 1 :]: v for k, v in config.items() if k.startswith(f"{network}.")}
    if not own:
        return 1.0
    alpha = own.get("lora_alpha", PEFT_DEFAULT_ALPHA)
    for pattern, value in (own.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", path):
            alpha = value
            break
    return alpha / (math.sqrt(rank) if own.get("use_rslora") else rank)


def save_lora(path: str | os.PathLike, factors: Mapping[str, LoraFactors], alpha: float) -> Path:
    """Write LoRA factors keyed "network.module" (one rank, scale alpha / rank) as a PEFT/diffusers
    file: `unet.<module>.lora_A.weight` / `.lora_B.weight`, and per network the LoraConfig
    (r, lora_alpha, target_modules: the exact layer names) in the `lora_adapter_metadata`."""
    from safetensors.torch import save_file

    if not factors:
        raise CheckpointError("no LoRA layers to save")
    ranks = {f.down.shape[0] for f in factors.values()}
    if len(ranks) != 1:
        raise CheckpointError(f"one rank per file is saved, got ranks {sorted(ranks)}")
    rank = ranks.pop()
    tensors, config = {}, {}
    for key, f in factors.items():
        network, _, module = key.partition(".")
        if network not in NETWORKS:
            raise CheckpointError(f"LoRA layer {key!r} is in no network of {', '.join(NETWORKS)}")
        tensors[f"{key}.lora_A.weight"] = f.down.detach().float().contiguous().cpu()
        tensors[f"{key}.lora_B.weight"] = f.up.detach().float().contiguous().cpu()
        config.setdefault(f"{network}.target_modules", []).append(module)
        config.update({f"{network}.r": rank, f"{network}.lora_alpha": alpha})
    metadata = {"format": "pt", METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)}
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path
