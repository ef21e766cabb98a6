"""Mean/std normalisation of state and actions, with the statistics stored as module buffers.

Keeping the stats in buffers puts them in the checkpoint's state_dict, so a policy can never be run
with statistics other than the ones it was trained with. Gripper action dims are binary (0 open,
1 closed) and are passed through untouched: heads treat them as classification targets.
"""

from __future__ import annotations

import torch
from torch import nn

from vla.types import ACTION_KEY, STATE_KEY, FeatureSpec

# Dims that barely move (a locked joint, a constant state entry) would otherwise be divided by ~0 and
# turn sensor noise into huge inputs; 1e-2 is small next to any joint range in radians.
MIN_STD = 1e-2
STAT_NAMES = ("mean", "std", "min", "max")


class Normalizer(nn.Module):
    def __init__(self, spec: FeatureSpec, stats: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
        """``stats=None`` creates placeholder buffers of the right shapes, to be filled by load_state_dict."""
        super().__init__()
        self.gripper_dims = tuple(spec.gripper_dims)
        sizes = {STATE_KEY: spec.state_dim, ACTION_KEY: spec.action_dim}
        for key, dim in sizes.items():
            prefix = _prefix(key)
            given = _check_stats(stats, key, dim) if stats is not None else None
            for name in STAT_NAMES:
                default = torch.ones(dim) if name in ("std", "max") else torch.zeros(dim)
                value = given[name] if given is not None else default
                self.register_buffer(f"{prefix}_{name}", value.clone())
        gripper = torch.zeros(spec.action_dim, dtype=torch.bool)
        gripper[list(self.gripper_dims)] = True
        self.register_buffer("gripper_mask", gripper, persistent=False)

    def _scale(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = _prefix(key)
        mean, std = getattr(self, f"{prefix}_mean"), getattr(self, f"{prefix}_std").clamp_min(MIN_STD)
        if key == ACTION_KEY:
            # Identity on gripper dims: mean 0, std 1.
            mean = mean.masked_fill(self.gripper_mask, 0.0)
            std = std.masked_fill(self.gripper_mask, 1.0)
        return mean, std

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._scale(key)
        if x.shape[-1] != mean.shape[0]:
            raise ValueError(f"{key} has last dim {x.shape[-1]}, the normaliser expects {mean.shape[0]}")
        return (x - mean) / std

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._scale(key)
        return x * std + mean

    def continuous_dims(self) -> torch.Tensor:
        """Bool mask over action dims, True where the dim is continuous (not a gripper)."""
        return ~self.gripper_mask


def _prefix(key: str) -> str:
    return "state" if key == STATE_KEY else "action"


def _check_stats(stats: dict[str, dict[str, torch.Tensor]], key: str, dim: int) -> dict[str, torch.Tensor]:
    if key not in stats:
        raise ValueError(f"stats lack {key!r}; compute dataset stats for {key} (mean/std/min/max)")
    out = {}
    for name in STAT_NAMES:
        if name not in stats[key]:
            raise ValueError(f"stats[{key!r}] lacks {name!r}; expected keys {list(STAT_NAMES)}")
        value = torch.as_tensor(stats[key][name], dtype=torch.float32).flatten()
        if value.shape[0] != dim:
            raise ValueError(
                f"stats[{key!r}][{name!r}] has {value.shape[0]} entries but the feature spec says "
                f"{dim}; recompute the stats for this dataset"
            )
        if not torch.isfinite(value).all():
            raise ValueError(f"stats[{key!r}][{name!r}] contains NaN or inf; recompute the dataset stats")
        out[name] = value
    return out
