"""Adapters shipped in the package by name: spacetime/assets/<kind>/<name>/ holding `marker`.

Torch-free, so the command lines list and check names before any weights load.
"""

from __future__ import annotations

from pathlib import Path


def shipped(kind: str, marker: str) -> dict[str, Path]:
    """{name: the marker file} of the `kind` adapters shipped (lora, controlnet)."""
    from importlib import resources

    root = Path(str(resources.files("spacetime"))) / "assets" / kind
    found = sorted(root.glob(f"*/{marker}")) if root.is_dir() else []
    # hidden folders are a ship tool's work in progress, not shipped
    return {file.parent.name: file for file in found if not file.parent.name.startswith(".")}
