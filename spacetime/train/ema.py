"""Exponential moving average of weights (Polyak averaging), checkpointed with the run."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copy θ̄ ← d·θ̄ + (1−d)·θ with warm-up d = min(decay, (1+n)/(10+n)) (as in LDM)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {
            k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in module.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for k, p in module.named_parameters():
            if k in self.shadow:
                p.copy_(self.shadow[k])

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        # Checkpoints load onto the CPU: keep each average on the device it trains on.
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


class Counter:
    """The step counter, saved with the optimizer so a resumed run continues where it stopped."""

    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
