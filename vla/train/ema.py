"""Exponential moving average of a policy's weights, the weights that get deployed.

Averaging the last few thousand SGD iterates removes much of the step-to-step noise of the final
weights; imitation policies (Diffusion Policy, pi0) ship the average rather than the raw weights.
The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are
not dominated by the random initialisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightEMA:
    """Shadow copies of ``model``'s floating-point parameters and buffers, updated after each step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1) (0 turns the average off), got {decay}")
        self.decay = decay
        self.updates = 0
        # state_dict() tensors share storage with the live weights, which the optimizer and
        # load_state_dict only ever update in place: bind them once instead of every step.
        live = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        self.shadow = {k: v.detach().clone() for k, v in live.items()}
        self._live = list(live.values())
        self._avg = list(self.shadow.values())

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        torch._foreach_lerp_(self._avg, self._live, 1.0 - self.current_decay())
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` holds the averaged weights inside the block and its own weights again after it."""
        state = model.state_dict()
        raw = {k: state[k].detach().clone() for k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(raw, strict=False)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates}

    def load(self, averaged: dict[str, torch.Tensor], state: dict[str, object]) -> None:
        """Restore from a checkpoint: ``averaged`` are its deployed weights, ``state`` its counters."""
        for k, avg in self.shadow.items():
            avg.copy_(averaged[k])
        self.updates = int(state["updates"])  # type: ignore[call-overload]
