"""Where a LoRA is: a file, a diffusers LoRA folder, or the name of one shipped in the package.

Torch-free, so the command lines check their --lora values before any weights load.
"""

from __future__ import annotations

import os
from pathlib import Path

from spacetime.errors import ArgumentValueError
from spacetime.formats.shipped import shipped

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE


def shipped_loras() -> dict[str, Path]:
    """{name: file} of the LoRAs shipped in the package (spacetime/assets/lora/<name>/)."""
    return shipped("lora", LORA_FILE)


def find_lora(spec: str | os.PathLike) -> Path:
    """The LoRA file `spec` names: a file, a folder holding pytorch_lora_weights.safetensors (as
    diffusers' save_lora_weights writes), or a shipped LoRA's name (`zoom-in`)."""
    path = Path(spec)
    if path.is_file():
        return path
    if (path / LORA_FILE).is_file():
        return path / LORA_FILE
    shipped = shipped_loras()
    if str(spec) in shipped:
        return shipped[str(spec)]
    what = f"a folder without {LORA_FILE}" if path.is_dir() else "no such file"
    names = ", ".join(shipped) or "none in this install"
    raise ArgumentValueError(f"LoRA {spec}: {what}, nor a shipped LoRA (shipped: {names})")


def lora_name(file: Path) -> str:
    """An adapter's default name: the file's stem, or its folder's name for diffusers' file."""
    return file.parent.name if file.name == LORA_FILE else file.stem
