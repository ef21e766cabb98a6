"""Joint targets relative to the current joint positions (delta actions).

Demonstrations move a joint by a few hundredths of a radian per tick, while a joint's absolute
position spans most of a radian over a dataset. Predicting absolute targets normalised by the
dataset spread leaves the motion itself far below the model's error; predicting the target minus
the current position (normalised by the spread of those deltas over a chunk) makes the motion
the signal. An action dim is relative when its name is ``<state name>.target`` (or equals a state
name); gripper dims stay absolute (they are a binary command, not a position).
"""

from __future__ import annotations

import torch

from vla.types import FeatureSpec


def relative_pairs(spec: FeatureSpec) -> tuple[list[int], list[int]]:
    """(action dims, matching state dims) of the actions expressed relative to the state."""
    if not spec.action_names or not spec.state_names:
        raise ValueError("relative actions need action_names and state_names in the FeatureSpec "
                         "(the dataset's feature names); set head.relative_actions=false otherwise")
    state_index = {name: i for i, name in enumerate(spec.state_names)}
    actions, states = [], []
    for i, name in enumerate(spec.action_names):
        if i in spec.gripper_dims:
            continue
        j = state_index.get(name.removesuffix(".target"))
        if j is not None:
            actions.append(i)
            states.append(j)
    if not actions:
        raise ValueError(f"no action name matches a state name (actions {spec.action_names}, states "
                         f"{spec.state_names}); set head.relative_actions=false")
    return actions, states


def to_relative(actions: torch.Tensor, state: torch.Tensor, pairs: tuple[list[int], list[int]]) -> torch.Tensor:
    """Actions (B, H, A) minus the state (B, S) on the paired dims."""
    a_idx, s_idx = pairs
    out = actions.clone()
    out[..., a_idx] = actions[..., a_idx] - state[:, None, s_idx]
    return out


def to_absolute(
    actions: torch.Tensor,
    state: torch.Tensor,
    pairs: tuple[list[int], list[int]] | tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Inverse of :func:`to_relative`; ``actions`` may carry a sample axis: (B, H, A) or (B, k, H, A).

    ``pairs`` may be index tensors on the actions' device (no host-to-device copy: CUDA-graph safe)."""
    a_idx, s_idx = pairs
    out = actions.clone()
    offset = state[:, s_idx].reshape(state.shape[0], *([1] * (actions.ndim - 2)), len(s_idx))
    out[..., a_idx] = actions[..., a_idx] + offset
    return out


def chunk_deltas(
    state: torch.Tensor, action: torch.Tensor, episode_end: torch.Tensor, frames: torch.Tensor, chunk_size: int,
    pairs: tuple[list[int], list[int]],
) -> torch.Tensor:
    """Every (frame, offset) relative action of the chunks the training data will serve: (N * H, A).

    Offsets past an episode's end repeat its last action, as the chunk sampler pads them.
    """
    out = []
    for k in range(chunk_size):
        idx = torch.minimum(frames + k, episode_end[frames] - 1)
        out.append(to_relative(action[idx][:, None], state[frames], pairs)[:, 0])
    return torch.cat(out)
