"""Reading weight files safely and loading them into modules with exact, named error reports."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from spacetime.errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from .safetensors, or from a pickle through `torch.load(weights_only=True)`,
    which never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises several types for bad headers / short files
            raise CheckpointError(f"corrupt or truncated safetensors file {path}: {e}") from None
    if path.suffix in WEIGHT_SUFFIXES:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"cannot read {path} as a weights-only torch checkpoint "
                f"(corrupt, truncated, or it contains code, which is refused): {str(e).splitlines()[0]}"
            ) from None
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise CheckpointError(f"{path} holds a {type(sd).__name__}, not a state dict")
        return {k: v for k, v in sd.items() if isinstance(v, Tensor)}
    raise CheckpointError(
        f"unknown checkpoint type {path.suffix!r} for {path}; expected one of {WEIGHT_SUFFIXES}"
    )


def find_weights(folder: Path, stem: str) -> list[Path]:
    """The weight file(s) of a diffusers/transformers component folder (single or sharded)."""
    for suffix in (".safetensors", ".bin"):
        single = folder / f"{stem}{suffix}"
        if single.is_file():
            return [single]
        index = folder / f"{stem}{suffix}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / s for s in shards]
    for variant in ("fp16", "bf16"):
        single = folder / f"{stem}.{variant}.safetensors"
        if single.is_file():
            return [single]
    raise CheckpointError(f"no weights in {folder}: expected {stem}.safetensors")


def read_component(folder: Path, stem: str) -> dict[str, Tensor]:
    sd: dict[str, Tensor] = {}
    for f in find_weights(folder, stem):
        sd.update(read_weights(f))
    return sd


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt JSON in {path}: {e}") from None


def load_into(module: nn.Module, state_dict: dict[str, Tensor], what: str) -> nn.Module:
    """Strictly load a state dict, naming every missing/unexpected key and any shape mismatch.

    Works on modules built on the meta device: tensors are assigned, not copied, so a model is
    never initialised twice (start-up time matters for the CLIs).
    """
    own = module.state_dict(keep_vars=True)
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"{what}: shape mismatch for {key}: checkpoint {tuple(value.shape)}, "
                f"model {tuple(own[key].shape)}"
            )
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        raise CheckpointError(f"{what}: " + "; ".join(parts))
    dtype = next(iter(own.values())).dtype if own else torch.float32
    if dtype == torch.float32:
        # Half-precision files load as fp32; the pipeline chooses the run precision itself.
        state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    module.load_state_dict(state_dict, strict=True, assign=True)
    return module


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def build_empty(factory: Callable[[], nn.Module]) -> nn.Module:
    """Construct a module on the meta device: no memory, no random init, filled by `load_into`."""
    with torch.device("meta"):
        return factory()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary sibling and rename, so a failure never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
