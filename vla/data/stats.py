"""Normalisation statistics of state and action, in the shape the policy contract expects.

Stats come from the training episodes only, so validation never leaks into the normaliser. Gripper
action dims get identity stats (mean 0, std 1, min 0, max 1): they are binary targets that must stay in
[0, 1] whichever normalisation (mean/std or min/max) a consumer applies.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vla.types import ACTION_KEY, STATE_KEY, FeatureSpec

Stats = dict[str, dict[str, torch.Tensor]]
STAT_NAMES = ("mean", "std", "min", "max")


def feature_stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """mean / std (population) / min / max over the first axis of an (N, D) tensor."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"stats need a non-empty (N, D) tensor, got shape {tuple(x.shape)}")
    x = x.double()  # float32 sums over ~1e5 frames lose digits the normaliser would then carry
    return {
        "mean": x.mean(0).float(),
        "std": x.std(0, correction=0).float(),
        "min": x.min(0).values.float(),
        "max": x.max(0).values.float(),
    }


def compute_stats(state: torch.Tensor, action: torch.Tensor, spec: FeatureSpec) -> Stats:
    """Stats dict of the policy contract: {"observation.state": {...}, "action": {...}}."""
    for key, x, dim in ((STATE_KEY, state, spec.state_dim), (ACTION_KEY, action, spec.action_dim)):
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"{key} has shape {tuple(x.shape)}, the feature spec says (N, {dim})")
    stats = {STATE_KEY: feature_stats(state), ACTION_KEY: feature_stats(action)}
    dims = list(spec.gripper_dims)
    if dims:
        grip = action[:, dims]
        if ((grip < 0) | (grip > 1)).any():
            bad = [spec.action_names[d] if spec.action_names else d for d in dims]
            raise ValueError(f"gripper action dim(s) {bad} hold values outside [0, 1] (min "
                             f"{grip.min().item():.3g}, max {grip.max().item():.3g}); record the gripper "
                             "as 0 = open .. 1 = closed")
        for name, value in (("mean", 0.0), ("std", 1.0), ("min", 0.0), ("max", 1.0)):
            stats[ACTION_KEY][name][dims] = value
    return stats


def stats_to_json(stats: Stats) -> dict[str, dict[str, list[float]]]:
    return {key: {name: t.tolist() for name, t in group.items()} for key, group in stats.items()}


def stats_from_json(data: dict[str, dict[str, list[float]]]) -> Stats:
    return {key: {name: torch.tensor(v, dtype=torch.float32) for name, v in group.items()}
            for key, group in data.items()}


def save_stats(stats: Stats, path: str | Path) -> None:
    Path(path).write_text(json.dumps(stats_to_json(stats), indent=2))


def load_stats(path: str | Path) -> Stats:
    return stats_from_json(json.loads(Path(path).read_text()))


def relative_action_stats(
    stats: Stats, state: torch.Tensor, action: torch.Tensor, episode_end: torch.Tensor, frames: torch.Tensor,
    chunk_size: int, spec: FeatureSpec,
) -> Stats:
    """``stats`` with the action statistics of relative chunks (see vla/processing/relative.py)."""
    from vla.processing.relative import chunk_deltas, relative_pairs

    deltas = chunk_deltas(state, action, episode_end, frames, chunk_size, relative_pairs(spec))
    out = {key: {name: t.clone() for name, t in group.items()} for key, group in stats.items()}
    rel = feature_stats(deltas)
    a_idx = relative_pairs(spec)[0]
    for name in rel:
        out[ACTION_KEY][name][a_idx] = rel[name][a_idx]
    return out
