"""Normalisation stats: values, gripper identity, validation, JSON round trip."""

from __future__ import annotations

import pytest
import torch

from vla.data import compute_stats, stats_from_json, stats_to_json
from vla.types import FeatureSpec

SPEC = FeatureSpec(cameras=("front",), image_shape=(3, 8, 8), state_dim=2, action_dim=3, gripper_dims=(2,))


def _data(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state = torch.randn(n, 2, generator=gen) * torch.tensor([1.0, 5.0]) + torch.tensor([0.0, 3.0])
    action = torch.randn(n, 3, generator=gen)
    action[:, 2] = (torch.arange(n) % 3 == 0).float()
    return state, action


def test_stats_match_the_data_and_leave_the_gripper_unscaled():
    state, action = _data()
    stats = compute_stats(state, action, SPEC)
    s = stats["observation.state"]
    assert torch.allclose(s["mean"], state.mean(0), atol=1e-6)
    assert torch.allclose(s["std"], state.std(0, correction=0), atol=1e-6)
    assert torch.equal(s["min"], state.min(0).values) and torch.equal(s["max"], state.max(0).values)
    a = stats["action"]
    assert torch.allclose(a["mean"][:2], action[:, :2].mean(0), atol=1e-6)
    assert [a[k][2].item() for k in ("mean", "std", "min", "max")] == [0.0, 1.0, 0.0, 1.0]
    normalised = (action - a["mean"]) / a["std"]
    assert torch.equal(normalised[:, 2], action[:, 2])  # still binary in [0, 1]


def test_bad_inputs_are_refused_with_the_reason():
    state, action = _data()
    action[3, 2] = 2.0
    with pytest.raises(ValueError, match=r"gripper action dim\(s\) \[2\].*outside \[0, 1\]"):
        compute_stats(state, action, SPEC)
    with pytest.raises(ValueError, match=r"observation.state has shape \(50, 3\)"):
        compute_stats(torch.zeros(50, 3), action, SPEC)


def test_json_round_trip_is_exact():
    stats = compute_stats(*_data(), SPEC)
    back = stats_from_json(stats_to_json(stats))
    assert all(torch.equal(back[k][n], stats[k][n]) for k in stats for n in stats[k])
