"""Exponential moving average of model weights (Polyak averaging), with the usual warm-up.

``theta_ema <- d theta_ema + (1 - d) theta`` with ``d = min(decay, (1 + n) / (10 + n))`` after the
n-th update, so early weights do not dominate a short run.
"""

from __future__ import annotations

import copy

import torch


class EMA:
    """A frozen copy of ``model`` that tracks its weights."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One averaging step towards ``model``'s current weights."""
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
