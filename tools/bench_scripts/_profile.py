"""What the video profile's child scripts share: ranges around the U-Net and its temporal layers,
and the profiler's op times grouped into the parts tools/profile_video.py reports.

torch only (never spacetime or diffusers), so importing it costs either contender nothing.
"""

from __future__ import annotations

import re

import torch
from torch.autograd.profiler import record_function

# aten ops by part; the first match wins (attention's bmm before matmul's mm)
PARTS = (
    ("attention", ("scaled_dot_product", "_softmax", "softmax", "bmm", "baddbmm")),
    ("group/layer norm", ("group_norm", "layer_norm")),
    ("convolution", ("convolution", "conv2d", "conv3d", "mkldnn_conv")),
    ("linear", ("addmm", "aten::mm", "linear", "matmul")),
    ("activations & elementwise", ("silu", "gelu", "sigmoid", "aten::mul", "aten::add", "aten::div",
                                   "aten::sub", "aten::exp", "aten::sin", "aten::cos", "chunk")),
    ("copies & layout", ("copy_", "clone", "contiguous", "aten::cat", "_to_copy", "aten::to",
                         "repeat", "expand", "permute", "reshape", "view", "transpose",
                         "empty", "pad", "upsample", "interpolate", "index")),
)  # fmt: skip
TEMPORAL = re.compile(r"(^|\.)motion_modules\.\d+$")


def _ranged(module: torch.nn.Module, name: str) -> None:
    """Every forward of `module` inside a profiler range called `name`."""
    stack = []

    def enter(*_):
        stack.append(record_function(name))
        stack[-1].__enter__()

    def leave(*_):
        stack.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def mark(unet: torch.nn.Module) -> int:
    """Ranges around the U-Net ("unet") and each motion module ("temporal"); returns how many
    motion modules (both libraries name them `...motion_modules.N`)."""
    _ranged(unet, "unet")
    temporal = [m for n, m in unet.named_modules() if TEMPORAL.search(n)]
    for module in temporal:
        _ranged(module, "temporal")
    return len(temporal)


def part_of(op: str) -> str:
    for part, keys in PARTS:
        if any(key in op for key in keys):
            return part
    return "other"


def summarise(prof) -> dict:
    """Seconds inside the U-Net: inclusive in the temporal layers and in all, and the U-Net's
    self time per part, split into temporal and spatial (the rest of the U-Net)."""
    out = {"unet": 0.0, "temporal": 0.0, "parts": {}, "parts_temporal": {}}
    for event in prof.events():
        chain, parent = set(), event.cpu_parent
        while parent is not None:
            chain.add(parent.name)
            parent = parent.cpu_parent
        if event.name == "unet" and "unet" not in chain:
            out["unet"] += event.cpu_time_total / 1e6
        elif event.name == "temporal" and "temporal" not in chain:
            out["temporal"] += event.cpu_time_total / 1e6
        if "unet" not in chain or event.name in ("unet", "temporal"):
            continue
        part = part_of(event.name)
        out["parts"][part] = out["parts"].get(part, 0.0) + event.self_cpu_time_total / 1e6
        if "temporal" in chain:
            where = out["parts_temporal"]
            where[part] = where.get(part, 0.0) + event.self_cpu_time_total / 1e6
    return out


def profiled(fn):
    """fn() under the CPU profiler: (its result, the summary)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = fn()
    return result, summarise(prof)
