"""Argument checks shared by the Python API and the CLIs; torch-free, so CLIs run them at once.

Each check names the argument and the value, and raises ArgumentTypeError (also a TypeError) or
ArgumentValueError (also a ValueError), both SpacetimeErrors that the CLIs print as one line.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

from spacetime.errors import ArgumentTypeError, ArgumentValueError

SAMPLERS = ("ddim", "ddpm", "euler", "euler-a", "dpm++", "lcm")
# control-image preprocessors (spacetime.preprocess): two ship, the rest come from controlnet_aux
PREPROCESSORS = (
    "canny",
    "mask",
    "depth",
    "normal",
    "openpose",
    "lineart",
    "hed",
    "mlsd",
    "softedge",
)
# The noise-schedule settings a command line may override (spacetime.sampling.NoiseSchedule's)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
KARRAS_SAMPLERS = ("euler", "euler-a", "dpm++")  # those that step over a sigma grid
ETA_SAMPLERS = ("ddim",)  # ddpm and euler-a are fully stochastic; euler and dpm++ not at all
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# attention kernels (spacetime.models.attention): auto = xformers on CUDA when installed, else SDPA
ATTENTION_BACKENDS = ("auto", "sdpa", "xformers", "sliced")
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes any unsigned 64-bit seed


def integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool, not a float such as 2.5 or 2.0) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer, got {value!r}")
    return _in_range(name, int(value), low, high)


def number(name: str, value: object, low: float | None = None, high: float | None = None) -> float:
    """A finite real number within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ArgumentValueError(f"{name} must be a finite number, got {value}")
    return _in_range(name, float(value), low, high)


def _show(bound: float) -> str:
    """0.0 as 0, 2**64 - 1 in full."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _in_range(name: str, value, low, high):
    if low is not None and high is not None and not low <= value <= high:
        raise ArgumentValueError(f"{name} must be in [{_show(low)}, {_show(high)}], got {value}")
    if low is not None and value < low:
        raise ArgumentValueError(f"{name} must be >= {_show(low)}, got {value}")
    if high is not None and value > high:
        raise ArgumentValueError(f"{name} must be <= {_show(high)}, got {value}")
    return value


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be True or False, got {value!r}")
    return value


def choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ArgumentValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value  # type: ignore[return-value]


def prompts(name: str, value: object, allow_none: bool = False) -> tuple[str, ...]:
    """A prompt or a sequence of prompts, as a tuple of strings."""
    if value is None and allow_none:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(p, str) for p in value):
        return tuple(value)
    raise ArgumentTypeError(f"{name} must be a string or a list of strings, got {value!r:.80}")


def prompt_travel(value: Mapping) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """A {frame: prompt} mapping -> (key frames, prompts) in frame order."""
    for frame, prompt in value.items():
        integer("prompt travel key frame", frame, 0)
        if not isinstance(prompt, str):
            raise ArgumentTypeError(
                f"the prompt at frame {frame} must be a string, got {prompt!r:.80}"
            )
    keys = tuple(sorted(value))
    return keys, tuple(value[k] for k in keys)


def key_frames(keys: Sequence[int], frames: int) -> None:
    """Prompt travel's key frames: the first 0, increasing, all within the clip."""
    for key in keys:
        integer("key frame", key, 0)
    if keys[0] != 0:
        raise ArgumentValueError(
            f"the first key frame must be 0 (the prompt the clip starts from), got {keys[0]}"
        )
    for a, b in zip(keys[:-1], keys[1:], strict=True):
        if b <= a:
            raise ArgumentValueError(f"key frames must increase, got {a} then {b}")
    if keys[-1] >= frames:
        raise ArgumentValueError(
            f"key frame {keys[-1]} is past the clip's last frame ({frames - 1}; frames={frames})"
        )


def steps_fit(steps: int, scheduler: str, schedule_length: int, lcm_steps: int) -> None:
    """Steps within the model's noise schedule, and for the lcm sampler within the grid it was
    distilled on (original_inference_steps)."""
    if steps > schedule_length:
        raise ArgumentValueError(
            f"steps must be <= {schedule_length} (the model's noise schedule), got {steps}"
        )
    if scheduler == "lcm" and steps > lcm_steps:
        raise ArgumentValueError(
            f"the lcm sampler takes at most {lcm_steps} steps (the model's "
            f"original_inference_steps), got {steps}"
        )


def seed(value: object) -> int | None:
    """None (a fresh random seed) or 0 ... 2**64 - 1."""
    return None if value is None else integer("seed", value, 0, MAX_SEED)


def sampler_options(scheduler: object, karras: object, eta: object) -> None:
    """The sampler, and options that the chosen sampler has."""
    choice("scheduler", scheduler, SAMPLERS)
    if flag("karras", karras) and scheduler not in KARRAS_SAMPLERS:
        raise ArgumentValueError(
            f"karras sigmas apply to {', '.join(KARRAS_SAMPLERS)}, not the {scheduler} sampler"
        )
    if number("eta", eta, 0.0) and scheduler not in ETA_SAMPLERS:
        raise ArgumentValueError(
            f"eta applies to the {', '.join(ETA_SAMPLERS)} sampler only, not {scheduler} "
            f"(got eta={eta})"
        )


def parse_lora_arg(text: str) -> tuple[str, float]:
    """A `PATH[:WEIGHT]` flag value → (path, weight), weight 1 when none is given. A suffix that
    is not a number belongs to the path (`C:\\lora.safetensors`)."""
    path, sep, weight = text.rpartition(":")
    if not sep or not path:
        return text, 1.0
    try:
        value = float(weight)
    except ValueError:
        return text, 1.0
    if not math.isfinite(value):
        raise ArgumentValueError(f"LoRA weight must be a finite number, got {weight!r} in {text!r}")
    return path, value
