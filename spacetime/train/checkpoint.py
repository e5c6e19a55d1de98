"""Training checkpoints without pickle: tensors in one safetensors file, the rest in JSON.

accelerate's `save_state` pickles optimizer, scheduler and custom state, and its `load_state`
unpickles custom state with `weights_only=False`: resuming a run folder that someone else handed
over would run any code planted in it. Here a checkpoint is `state.json` (numbers, strings, lists,
and references to tensors) beside `tensors.safetensors`; reading either can only yield data. A
checkpoint folder holding anything else (accelerate's `*.pkl`/`*.bin`) is refused, not read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spacetime.errors import CheckpointError

STATE, TENSORS = "state.json", "tensors.safetensors"
FILES = (STATE, TENSORS)
FORMAT = "spacetime-train-checkpoint/1"

# JSON can only say "object": these tags keep the Python types a state dict uses.
_TENSOR, _TUPLE, _ITEMS = "$tensor", "$tuple", "$items"


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write `state` (nested dicts, lists and tuples of tensors, numbers, strings, None)."""
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, Tensor):
            tensor = value.detach().cpu().contiguous()
            view = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
            # safetensors refuses tensors sharing memory (tied weights): store each once more
            tensors[path] = tensor.clone() if view in seen else tensor
            seen.add(view)
            return {_TENSOR: path}
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: encode(v, f"{path}/{k}") for k, v in value.items()}
            return {_ITEMS: [[k, encode(v, f"{path}/{k}")] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {_TUPLE: [encode(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, f"{path}/{i}") for i, v in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot checkpoint {type(value).__name__} at {path}")

    folder.mkdir(parents=True, exist_ok=True)
    document = {"format": FORMAT, "state": encode(state, "")}
    (folder / STATE).write_text(json.dumps(document, indent=1) + "\n")
    save_file(tensors, str(folder / TENSORS))


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """Read a checkpoint that `save_checkpoint` wrote; anything else raises CheckpointError."""
    from safetensors import safe_open

    others = sorted(p.name for p in folder.iterdir() if p.name not in FILES)
    if others:
        raise CheckpointError(
            f"refused to resume from {folder}: it holds {', '.join(others)}, which spacetime never "
            "writes (pickled training state can run code when read, so it is never read); resume "
            "from a checkpoint spacetime wrote, or start over with --no-resume"
        )
    try:
        document = json.loads((folder / STATE).read_text())
        with safe_open(str(folder / TENSORS), framework="pt", device="cpu") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"damaged checkpoint {folder}: {e}") from None
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise CheckpointError(f"damaged checkpoint {folder}: {type(e).__name__}: {e}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"damaged checkpoint {folder}: {STATE} is not a {FORMAT} file")

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {_TENSOR}:
            if value[_TENSOR] not in tensors:
                raise CheckpointError(f"damaged checkpoint {folder}: no tensor {value[_TENSOR]!r}")
            return tensors[value[_TENSOR]]
        if set(value) == {_TUPLE} and isinstance(value[_TUPLE], list):
            return tuple(decode(v) for v in value[_TUPLE])
        if set(value) == {_ITEMS} and isinstance(value[_ITEMS], list):
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in value[_ITEMS]):
                raise CheckpointError(f"damaged checkpoint {folder}: bad {_ITEMS} entry")
            return {_key(k, folder): decode(v) for k, v in value[_ITEMS]}
        if any(k.startswith("$") for k in value):
            raise CheckpointError(f"damaged checkpoint {folder}: unknown tag in {sorted(value)}")
        return {k: decode(v) for k, v in value.items()}

    state = decode(document.get("state"))
    if not isinstance(state, dict):
        raise CheckpointError(f"damaged checkpoint {folder}: no state in {STATE}")
    return state


def _key(key: Any, folder: Path) -> Any:
    if key is None or isinstance(key, bool | int | float | str):
        return key
    raise CheckpointError(f"damaged checkpoint {folder}: a mapping key is {type(key).__name__}")


def rng_state() -> dict[str, Any]:
    """torch's generators: modules that draw from them (dropout) resume where they stopped."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
