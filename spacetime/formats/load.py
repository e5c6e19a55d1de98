"""Find and load a model given a folder, a single checkpoint file, or a hub id."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from spacetime.errors import ArgumentTypeError, CheckpointError
from spacetime.formats.diffusers import Components, load_diffusers
from spacetime.formats.weights import WEIGHT_SUFFIXES

EXPECTED = (
    "a diffusers folder with model_index.json, or a single-file checkpoint "
    f"({', '.join(WEIGHT_SUFFIXES)})"
)


def default_model(kind: str = "image") -> Path | None:
    """The model trained by this project and shipped in the package, if this install has it."""
    from importlib import resources

    folder = Path(str(resources.files("spacetime"))) / "assets" / f"default-{kind}"
    # image, multiview: diffusers pipelines; motion: a MotionAdapter; video-vae: a temporal decoder
    marker = "model_index.json" if kind in ("image", "multiview") else "config.json"
    return folder if (folder / marker).is_file() else None


def shipped(kind: str = "image") -> Path:
    """The shipped default model of this kind, or an error asking for a path."""
    folder = default_model(kind)
    if folder is None:
        from spacetime.errors import SpacetimeError

        raise SpacetimeError(f"this install has no default {kind} model: give a model path")
    return folder


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


def _online(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve(spec: str | os.PathLike) -> Path:
    """A local path for `spec`: as given, from the hub cache, or downloaded when online."""
    if not isinstance(spec, str | os.PathLike):
        raise ArgumentTypeError(f"model must be a path or a hub id, got {spec!r:.80}")
    path = Path(spec).expanduser()
    if path.exists():
        return path
    spec = str(spec)
    if not _looks_like_hub_id(spec):
        raise CheckpointError(
            f"model not found: nothing at {path.absolute()} (expected {EXPECTED})"
        )
    from huggingface_hub import snapshot_download

    patterns = ["model_index.json", "*.json", "*.txt", "*.safetensors"]
    try:
        return Path(snapshot_download(spec, local_files_only=True, allow_patterns=patterns))
    except Exception:
        pass
    if not _online():
        raise CheckpointError(
            f"model {spec!r} is not a local path ({path.absolute()} does not exist; expected "
            f"{EXPECTED}) and the hub cannot be reached to download it (offline)"
        )
    try:
        return Path(snapshot_download(spec, allow_patterns=patterns))
    except Exception as e:
        raise CheckpointError(f"could not download {spec!r} from the hub: {e}") from None


def load_components(spec: str | os.PathLike) -> Components:
    """Load a Stable-Diffusion-family model from a diffusers folder, single file, or hub id; a
    ModelScope text-to-video folder loads with its U-Net already inflated."""
    path = resolve(spec)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointError(
                f"{path} is a folder without model_index.json (expected {EXPECTED})"
            )
        return load_diffusers(path)
    from spacetime.formats.single_file import load_single_file

    return load_single_file(path)
