"""Reading weight files safely and loading them into modules with exact, named error reports."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from spacetime.errors import CheckpointError
from spacetime.tempfiles import temp_file, temp_folder, umask

_TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_SUFFIXES = (".safetensors", *_TORCH_SUFFIXES)


def read_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a ``.safetensors`` or ``.ckpt``/``.pt``/``.pth``/``.bin`` file: (state dict, metadata).

    Pickle-based files load with ``weights_only=True``: tensors and plain containers only; a file
    that asks to construct any other Python object is refused, never executed.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a single checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                return {key: f.get_tensor(key) for key in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
        except Exception as e:  # safetensors raises its own error types for a bad header or size
            raise CheckpointError(
                f"{path}: corrupt or truncated safetensors file ({_reason(e)})"
            ) from None
    if suffix not in _TORCH_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown checkpoint type {suffix!r} (expected .safetensors, "
            + ", ".join(_TORCH_SUFFIXES)
            + ")"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is not None:
            raise CheckpointError(
                f"{path}: holds code, refused: reading it would call {found.group(1)}; only "
                "tensors are read from pickle checkpoints, and nothing in them is ever run"
            ) from None
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint, or one holding more than tensors, "
            f"refused ({_unpickle_reason(e)})"
        ) from None
    except Exception as e:  # torch reports damage as RuntimeError, EOFError, KeyError, ...
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_reason(e)})") from None
    # Lightning checkpoints nest the weights under "state_dict", AnimateDiff's SparseCtrl files
    # under "controlnet"
    for wrapper in ("state_dict", "controlnet"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(loaded).__name__}")
    tensors = {
        k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)
    }
    if not tensors:
        raise CheckpointError(f"{path}: no tensors in this checkpoint")
    return tensors, {}


def _unpickle_reason(e: Exception) -> str:
    """torch's refusal without its advice to retry with weights_only=False (which would run the
    file's code)."""
    lines = [
        line.strip()
        for line in str(e).splitlines()
        if line.strip() and "weights_only" not in line and not line.startswith("Check the docum")
    ]
    return lines[0] if lines else type(e).__name__


def _reason(e: Exception) -> str:
    """The first line of an exception, for one-line error messages."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a weights file (see `read_weights_file`)."""
    return read_weights_file(path)[0]


def find_weights(folder: Path, stem: str) -> list[Path]:
    """The weight file(s) of a diffusers/transformers component folder (single or sharded)."""
    for suffix in (".safetensors", ".bin"):
        single = folder / f"{stem}{suffix}"
        if single.is_file():
            return [single]
        index = folder / f"{stem}{suffix}.index.json"
        if index.is_file():
            return _shards(index)
    for variant in ("fp16", "bf16"):
        single = folder / f"{stem}.{variant}.safetensors"
        if single.is_file():
            return [single]
    raise CheckpointError(f"no weights in {folder}: expected {stem}.safetensors")


def _shards(index: Path) -> list[Path]:
    """The shard files a `*.index.json` names (each must sit beside it)."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"damaged shard index {index}: no weight_map of tensor → file")
    names = set(weight_map.values())
    if not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        raise CheckpointError(f"damaged shard index {index}: weight_map must name files beside it")
    return [index.parent / n for n in sorted(names)]


def read_component(folder: Path, stem: str) -> dict[str, Tensor]:
    sd: dict[str, Tensor] = {}
    for f in find_weights(folder, stem):
        sd.update(read_weights(f))
    return sd


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt JSON in {path}: {e}") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"corrupt JSON in {path}: expected an object, got {document!r:.40}")
    return document


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


class skipping_init(TorchFunctionMode):  # noqa: N801 (used as a context manager)
    """Within: random initialisation (nn.init's and Tensor.normal_/uniform_) does nothing, for
    modules whose weights are assigned right after. It saves the work of initialising them, and
    on the meta device, where it would do nothing anyway, ~1 s of every command's start-up: the
    first `normal_` there makes torch import its compiler stack."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RANDOM_INITS:  # nn.init passes the tensor by keyword
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))


_RANDOM_INITS = {
    torch.Tensor.normal_, torch.Tensor.uniform_, nn.init.normal_, nn.init.uniform_,
    nn.init.trunc_normal_, nn.init.kaiming_uniform_, nn.init.kaiming_normal_,
    nn.init.xavier_uniform_, nn.init.xavier_normal_,
}  # fmt: skip


def build_empty(factory: Callable[[], nn.Module]) -> nn.Module:
    """Construct a module on the meta device: no memory, no random init, filled by `load_into`."""
    with torch.device("meta"), skipping_init():
        return factory()


def atomic_folder(folder: Path, fill: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Assemble a folder through `fill(tmp)` next to its destination and rename it into place,
    so an error never leaves half a model behind."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise CheckpointError(f"{folder} exists; pass overwrite=True to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(folder.parent)
    try:
        fill(tmp)
        _as_if_created(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _as_if_created(root: Path) -> None:
    """Give a folder assembled in a private temp dir (0700, and some writers' 0600 files) the
    modes that mkdir() and open() give anything new (0777/0666 less the umask)."""
    mask = umask()
    for path in (root, *root.rglob("*")):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary sibling and rename, so a failure never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path.parent)
    try:
        write(Path(tmp))
        # mkstemp makes the file private (0600), and writers that replace it (safetensors) too;
        # the result gets the permissions any new file gets (0666 less the umask), as from open().
        os.chmod(tmp, 0o666 & ~umask())
        with open(tmp, "rb+") as f:  # the data is on disk before the name points at it
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
