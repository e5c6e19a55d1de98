"""AnimateDiff motion modules in single files: the original layout (guoyww/AnimateDiff
`mm_sd_v15*`, AnimateLCM's `AnimateLCM_sd15_t2v.ckpt`) and diffusers' MotionAdapter state dict
saved alone (AnimateDiff-Lightning's `animatediff_lightning_Nstep_diffusers.safetensors`).

Original keys nest each module as `…motion_modules.j.temporal_transformer.*` with
`attention_blocks.{0,1}`, `norms.{0,1}`, `ff_norm` and a stored `pos_encoder.pe`; diffusers'
MotionAdapter (and spacetime) drop the nesting, rename to attn1/attn2/norm1/norm2/norm3 and rebuild
the position codes. v1 files know 24 frame positions and have no mid-block module; v2 files know 32
and have one.
"""

from __future__ import annotations

import re

from torch import Tensor

from spacetime.errors import CheckpointError
from spacetime.models.inflate import AnimateDiff

# (original, diffusers) fragments, applied in order after `temporal_transformer.` is removed.
_RENAMES = (
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
)
_NEST = ".temporal_transformer."


def is_original_motion_module(sd: dict[str, Tensor]) -> bool:
    return any(is_original_key(k) for k in sd)


def is_original_key(key: str) -> bool:
    return _NEST in key


def rename_key(key: str) -> str:
    """One original key (motion module or motion LoRA) in diffusers' names."""
    new = key.replace(_NEST, ".")
    for old, rep in _RENAMES:
        new = new.replace(old, rep)
    return new


def original_to_diffusers(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], AnimateDiff]:
    """Rename an original motion-module state dict to diffusers keys; infer its spec."""
    out: dict[str, Tensor] = {}
    positions = None
    for key, value in sd.items():
        if _NEST not in key:
            raise CheckpointError(f"not an AnimateDiff motion-module key: {key}")
        if key.endswith("pos_encoder.pe"):
            positions = value.shape[1]  # (1, max_frames, channels): a pure function, rebuilt
            continue
        out[rename_key(key)] = value
    if positions is None:
        raise CheckpointError("motion module has no pos_encoder.pe, so its frame count is unknown")
    return out, _spec(out, positions)


def is_diffusers_motion_module(sd: dict[str, Tensor]) -> bool:
    """A MotionAdapter state dict: every key inside a motion module, in diffusers' names."""
    return bool(sd) and all(".motion_modules." in k and not is_original_key(k) for k in sd)


def diffusers_file_spec(sd: dict[str, Tensor]) -> AnimateDiff:
    """The spec of a MotionAdapter state dict saved without its config.json: frame positions
    from its stored position codes (`pos_embed.pe`, (1, max_frames, channels))."""
    codes = [v for k, v in sd.items() if k.endswith(".pos_embed.pe")]
    if not codes:
        raise CheckpointError(
            "motion module has no pos_embed.pe, so its frame count is unknown (a MotionAdapter "
            "folder's config.json says it)"
        )
    return _spec(sd, codes[0].shape[1])


def _spec(sd: dict[str, Tensor], positions: int) -> AnimateDiff:
    """The spec of motion modules in diffusers' names: layers and mid block from the keys."""
    mid = any(k.startswith("mid_block.") for k in sd)
    layers = {int(m.group(1)) for k in sd if (m := re.search(r"\.transformer_blocks\.(\d+)\.", k))}
    # AnimateDiff's modules all use 8 heads (its config: num_attention_heads=8), as do
    # AnimateLCM's and AnimateDiff-Lightning's (diffusers' MotionAdapter default).
    return AnimateDiff(heads=8, layers=len(layers), max_frames=positions, mid_block=mid)


def version(spec: AnimateDiff) -> str:
    """'v1' (24 positions, no mid block) or 'v2' (32 positions and a mid-block module)."""
    return "v1" if spec == AnimateDiff.v1() else "v2"


def _to_original(key: str) -> str:
    head, sep, tail = key.partition(".motion_modules.")
    index, _, rest = tail.partition(".")
    new = f"{head}{sep}{index}{_NEST}{rest}"
    for old, rep in _RENAMES:
        new = new.replace(rep, old)
    return new


def diffusers_to_original(sd: dict[str, Tensor], spec: AnimateDiff) -> dict[str, Tensor]:
    """The inverse, with the stored position codes the original files carry."""
    from spacetime.models.layers import sinusoidal_codes

    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        out[_to_original(key)] = value
        attn = re.match(r"(.*)\.attn([12])\.to_q\.weight$", key)
        if attn:  # each original attention block stores its own copy of the position codes
            block = _to_original(attn.group(1) + ".x").removesuffix(".x")
            pe = sinusoidal_codes(spec.max_frames, value.shape[1])
            out[f"{block}.attention_blocks.{int(attn.group(2)) - 1}.pos_encoder.pe"] = pe
    return out
