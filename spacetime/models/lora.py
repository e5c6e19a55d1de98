"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on named layers.

An adapter adds `scale · up @ down` to the weight of some linear or convolutional layers. Here it
is one mechanism for every file format (spacetime.formats.lora translates their keys into module
names): `Adapters` keeps each adapter's factors beside the networks and runs them either

- unfused, as a low-rank side branch added to the layer's output by a forward hook: parameter
  names and state dicts stay untouched, changing an adapter's weight costs nothing, and a layer
  with no active adapter has no hook, so it costs nothing either; or
- fused, folded into the layer's weight, which is kept and put back bit for bit on unfusing.

A conv layer's `down` is a conv with the layer's own kernel, stride and padding and `up` a 1×1
conv (LoCon, PEFT): the same as folding `up @ down` into the kernel.

`TrainableLora` is the training side: fresh factors as parameters on the layers a LoRA run
targets, run by the same side branch.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from spacetime import checks
from spacetime.errors import CheckpointError, SpacetimeError

LAYERS = (nn.Linear, nn.Conv2d, nn.Conv3d)
_SHOWN = 3  # offending keys an error message names


@dataclass(frozen=True)
class LoraFactors:
    """One layer's update ΔW = scale · up @ down, with the file key it came from."""

    down: Tensor  # (r, in) for a linear layer, (r, in, *kernel) for a conv
    up: Tensor  # (out, r), or (out, r, 1, ...) for a conv
    scale: float  # alpha / r
    source: str  # the layer's name in the file, for error messages

    def fits(self, module: nn.Module) -> bool:
        """Whether these factors have the shapes `module`'s update needs."""
        if not isinstance(module, nn.Linear) and module.groups != 1:
            return False
        down, up = factor_shapes(module, self.down.shape[0])
        return self.down.shape == down and self.up.shape == up


class _Layer:
    """The adapters of one layer, and what currently runs them: a hook or a fused weight."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.factors: dict[str, LoraFactors] = {}
        self.hook: RemovableHandle | None = None
        self.original: Tensor | None = None  # the weight while a fused one replaces it
        self.down = self.up = None  # the active adapters' factors, stacked, weights in `up`

    def refresh(self, weights: Mapping[str, float], fused: bool) -> None:
        """Run the adapters at `weights` (0 switches one off), fused or as a side branch."""
        if self.hook is not None:
            self.hook.remove()
            self.hook = None
        if self.original is not None:
            self.module.weight.data = self.original
            self.original = None
        active = [(f, weights[name]) for name, f in self.factors.items() if weights[name] != 0]
        if not active:
            self.down = self.up = None
            return
        if fused:
            weight = self.module.weight.data
            down, up = _stack(active, torch.float32)  # one rounding, of the sum, to the weight's
            fused_weight = torch.empty_like(weight)  # keeps the weight's memory format
            fused_weight.copy_(weight.float() + (up.flatten(1) @ down.flatten(1)).view_as(weight))
            self.original, self.module.weight.data = weight, fused_weight
            self.down = self.up = None
        else:
            self.down, self.up = _stack(active)
            self.hook = self.module.register_forward_hook(self._branch)

    def _branch(self, module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        return out + low_rank(module, args[0], self.down, self.up)


def low_rank(module: nn.Module, x: Tensor, down: Tensor, up: Tensor) -> Tensor:
    """The side branch `up @ down` of layer `module` on its input x."""
    if isinstance(module, nn.Linear):
        return F.linear(F.linear(x, down), up)
    # nn.Conv*'s own forward with another kernel: the layer's stride, padding and padding mode
    h = module._conv_forward(x, down, None)
    return (F.conv2d if up.ndim == 4 else F.conv3d)(h, up)


def factor_shapes(module: nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (down, up) shapes of a rank-`rank` update of a linear or (ungrouped) conv layer."""
    if isinstance(module, nn.Linear):
        return (rank, module.in_features), (module.out_features, rank)
    if module.groups != 1:
        raise SpacetimeError(f"LoRA on a grouped convolution ({module}) is not supported")
    kernel = tuple(module.kernel_size)
    return (rank, module.in_channels, *kernel), (module.out_channels, rank, *(1,) * len(kernel))


def _stack(
    active: list[tuple[LoraFactors, float]], dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """Several adapters as one low-rank pair, so a branch costs two matmuls however many run:
    rank-r_1 … rank-r_k updates are one rank-(r_1 + … + r_k) update whose `up` carries each
    adapter's scale and weight."""
    downs = [f.down.to(dtype) for f, _ in active]
    down = downs[0] if len(downs) == 1 else torch.cat(downs)  # one adapter: no copy of `down`
    up = torch.cat([f.up.to(dtype) * (f.scale * w) for f, w in active], dim=1)
    return down, up


class Adapters:
    """Named LoRA adapters on the layers of named networks (e.g. {"unet": …, "text_encoder": …}),
    each with its own weight. Layers are keyed "network.module.name"."""

    def __init__(self, networks: Mapping[str, nn.Module]):
        self.networks = dict(networks)
        self.weights: dict[str, float] = {}
        self.fused = False
        self._layers: dict[str, _Layer] = {}

    def layer_names(self) -> dict[str, list[str]]:
        """{network: names of its layers an adapter can change}, for the format readers."""
        return {
            network: [name for name, m in module.named_modules() if isinstance(m, LAYERS)]
            for network, module in self.networks.items()
        }

    def add(self, name: str, factors: Mapping[str, LoraFactors], weight: float = 1.0) -> None:
        """Attach adapter `name`; nothing changes unless every layer of it fits the model."""
        if name in self.weights:
            raise SpacetimeError(f"a LoRA named {name!r} is already loaded; unload it first")
        weight = checks.number(f"LoRA {name!r} weight", weight)
        if not factors:
            raise CheckpointError(f"LoRA {name!r} has no layers")
        modules = self._modules(name, factors)
        for key, f in factors.items():
            module = modules[key]
            to = dict(device=module.weight.device, dtype=module.weight.dtype)
            layer = self._layers.setdefault(key, _Layer(module))
            layer.factors[name] = LoraFactors(f.down.to(**to), f.up.to(**to), f.scale, f.source)
        self.weights[name] = weight
        self._refresh(factors)

    def _modules(self, name: str, factors: Mapping[str, LoraFactors]) -> dict[str, nn.Module]:
        """The layer each key names; a CheckpointError names the first keys that fit none."""
        modules, missing, misfits = {}, [], []
        for key, f in factors.items():
            network, _, path = key.partition(".")
            try:
                module = self.networks[network].get_submodule(path)
            except (KeyError, AttributeError):
                module = None
            if not isinstance(module, LAYERS):
                missing.append(f.source)
            elif not f.fits(module):
                misfits.append(
                    f"{f.source} (down {tuple(f.down.shape)}, up {tuple(f.up.shape)} for "
                    f"{key}'s weight {tuple(module.weight.shape)})"
                )
            else:
                modules[key] = module
        if missing:
            raise CheckpointError(
                f"LoRA {name!r}: {len(missing)} of {len(factors)} layers match no layer of this "
                f"model: {_first(missing)}"
            )
        if misfits:
            raise CheckpointError(
                f"LoRA {name!r}: {len(misfits)} of {len(factors)} layers do not fit this model's "
                f"shapes (another model family, or a rank mismatch): {_first(misfits)}"
            )
        return modules

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Change adapters' weights (0 switches one off); no reload, no copy of the model."""
        unknown = sorted(set(weights) - set(self.weights))
        if unknown:
            raise SpacetimeError(
                f"no LoRA named {unknown[0]!r}; loaded: {', '.join(self.weights) or 'none'}"
            )
        self.weights.update(
            {name: checks.number(f"LoRA {name!r} weight", w) for name, w in weights.items()}
        )
        # only the layers holding a changed adapter
        self._refresh([k for k, layer in self._layers.items() if set(weights) & set(layer.factors)])

    def fuse(self) -> None:
        """Fold the adapters, at their weights, into the layers' weights (faster sampling)."""
        self.fused = True
        self._refresh(self._layers)

    def unfuse(self) -> None:
        """Put the original weights back (bit for bit) and run the adapters as side branches."""
        self.fused = False
        self._refresh(self._layers)

    def remove(self, name: str) -> None:
        """Detach adapter `name` from every layer."""
        if name not in self.weights:
            raise SpacetimeError(
                f"no LoRA named {name!r}; loaded: {', '.join(self.weights) or 'none'}"
            )
        keys = [key for key, layer in self._layers.items() if name in layer.factors]
        for key in keys:
            del self._layers[key].factors[name]
        del self.weights[name]
        self._refresh(keys)
        self._layers = {key: layer for key, layer in self._layers.items() if layer.factors}

    def _refresh(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._layers[key].refresh(self.weights, self.fused)


def _first(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def target_layers(
    network: nn.Module,
    targets: Iterable[str],
    within: str | None = None,
    outside: str | None = None,
) -> dict[str, nn.Module]:
    """The linear and conv layers whose names end in one of `targets` (as peft's
    `target_modules`: the whole name or its last dotted parts), optionally only those whose name
    contains `within` or does not contain `outside`."""
    targets = tuple(targets)
    found = {
        name: m
        for name, m in network.named_modules()
        if isinstance(m, LAYERS)
        and any(name == t or name.endswith(f".{t}") for t in targets)
        and (within is None or within in name)
        and (outside is None or outside not in name)
    }
    if not found:
        raise SpacetimeError(f"no layer of the model matches the LoRA targets {', '.join(targets)}")
    return found


class TrainableLora(nn.Module):
    """Fresh LoRA factors on named layers, as parameters to train, run as the same side branch
    as loaded adapters (a forward hook per layer). PEFT's initialisation: `down` Kaiming-uniform,
    `up` zero, so training starts from the unchanged model; ΔW = alpha / rank · up @ down."""

    def __init__(self, layers: Mapping[str, nn.Module], rank: int, alpha: float):
        super().__init__()
        self.names = list(layers)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.down, self.up = nn.ParameterList(), nn.ParameterList()
        for index, module in enumerate(layers.values()):
            down_shape, up_shape = factor_shapes(module, rank)
            to = dict(device=module.weight.device, dtype=module.weight.dtype)
            down = torch.empty(down_shape, **to)
            nn.init.kaiming_uniform_(down, a=math.sqrt(5))  # nn.Linear's and peft's lora_A init
            self.down.append(nn.Parameter(down))
            self.up.append(nn.Parameter(torch.zeros(up_shape, **to)))
            # a partial of a bound method, not a closure: a deepcopy of the whole trained module
            # then hooks the copy's own factors
            module.register_forward_hook(functools.partial(self._branch, index))

    def _branch(self, index: int, module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        if not self.enabled:
            return out
        return out + self.scale * low_rank(module, args[0], self.down[index], self.up[index])

    enabled = True  # off: the layers compute the frozen model (a distillation's teacher)

    @contextlib.contextmanager
    def disabled(self):
        """The frozen model without the factors, inside the block."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    @torch.no_grad()
    def start_from(self, factors: Mapping[str, LoraFactors]) -> None:
        """Copy a saved LoRA's factors into the layers they name (a warm start); the others keep
        their fresh initialisation. Its rank must be this one's; its scale is folded into `up`."""
        index = {name: i for i, name in enumerate(self.names)}
        unknown = sorted(set(factors) - set(index))
        if unknown:
            raise CheckpointError(
                f"{len(unknown)} LoRA layers are not trained here: {', '.join(unknown[:3])}"
            )
        for name, f in factors.items():
            i = index[name]
            if f.down.shape != self.down[i].shape or f.up.shape != self.up[i].shape:
                raise CheckpointError(
                    f"{f.source}: factors {tuple(f.down.shape)} / {tuple(f.up.shape)}, the "
                    f"student's are {tuple(self.down[i].shape)} / {tuple(self.up[i].shape)}"
                )
            self.down[i].copy_(f.down)
            self.up[i].copy_(f.up * (f.scale / self.scale))

    def factors(self) -> dict[str, LoraFactors]:
        """The trained update of every layer, in float32, keyed by the layers' names."""
        return {
            name: LoraFactors(down.detach().float(), up.detach().float(), self.scale, name)
            for name, down, up in zip(self.names, self.down, self.up, strict=True)
        }
