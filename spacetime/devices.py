"""Devices: refuse one that does not exist here before any weights load."""

from __future__ import annotations

import torch

from spacetime.errors import ArgumentTypeError, ArgumentValueError


def check_device(device: object) -> torch.device:
    """`device` (cpu, cuda, cuda:N) as a torch.device, if this machine has it."""
    if not isinstance(device, str | torch.device):
        raise ArgumentTypeError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ArgumentValueError(f"device must be cpu, cuda or cuda:N, got {str(device)!r}")
    if parsed.type == "cuda":
        if torch.version.cuda is None:
            raise ArgumentValueError(
                f"device {str(device)!r}: this torch build has no CUDA support (a CPU build)"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ArgumentValueError(f"device {str(device)!r}: no CUDA device is visible")
        if parsed.index is not None and parsed.index >= count:
            raise ArgumentValueError(
                f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
    return parsed


def pick_device(name: str | None) -> torch.device:
    """The named device, checked; by default CUDA when there is one."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(name)
