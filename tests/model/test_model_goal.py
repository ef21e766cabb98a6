"""The auxiliary keyframe-goal head: built only when weighted, trained from the batch's keyframe states."""

from __future__ import annotations

import pytest
import torch
from model_helpers import SPEC, VOCAB, make_batch, make_stats, overfit, policy_config

from vla.model_config import HeadConfig
from vla.policy import VLAPolicy


def _policy(weight: float) -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(policy_config("l1", goal_loss_weight=weight), SPEC, VOCAB, make_stats())


def _with_goals(batch: dict, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    b = len(batch["task"])
    is_pad = torch.zeros(b, 2, dtype=torch.bool)
    is_pad[0, 1] = True  # a pick-only episode: no release keyframe
    return {**batch, "goal_state": torch.randn(b, 2, SPEC.state_dim, generator=gen), "goal_is_pad": is_pad}


def test_no_head_without_a_weight():
    assert _policy(0.0).goal_head is None
    with pytest.raises(ValueError, match="goal_loss_weight"):
        HeadConfig(goal_loss_weight=-1.0)
    with pytest.raises(ValueError, match="goal_frames"):
        HeadConfig(goal_loss_weight=1.0, goal_frames="after")


def test_goal_loss_is_added_with_its_weight():
    policy = _policy(0.5)
    batch = _with_goals(make_batch(4))
    torch.manual_seed(1)
    loss, terms = policy(batch)
    assert terms["loss"] == pytest.approx(loss.item())
    action_only = terms["l1"] + terms["gripper_bce"]  # the l1 head's own total (gripper_loss_weight 1)
    assert loss.item() == pytest.approx(action_only + 0.5 * terms["goal_l1"], rel=1e-5)


def test_goal_loss_reaches_the_backbone_and_falls():
    policy = _policy(1.0)
    batch = _with_goals(make_batch(4))
    policy.train()
    goal = policy._goal_loss(policy.encode(batch), batch)
    goal.backward()
    stem = policy.backbone.vision.stem[0].weight.grad
    assert stem is not None and stem.abs().sum() > 0, "the goal loss trains the vision encoder"
    assert all(p.grad is None or not p.grad.any() for p in policy.head.parameters())
    policy.zero_grad()
    before = goal.item()
    overfit(policy, batch, steps=100)
    policy.eval()
    after = policy._goal_loss(policy.encode(batch), batch).item()
    assert after < 0.5 * before, f"goal loss did not halve: {before:.3f} -> {after:.3f}"


def test_padded_keyframes_do_not_count():
    policy = _policy(1.0).eval()
    batch = _with_goals(make_batch(2))
    prefix = policy.encode(batch)
    moved = {**batch, "goal_state": batch["goal_state"].clone()}
    moved["goal_state"][0, 1] += 100.0  # the padded keyframe
    torch.testing.assert_close(policy._goal_loss(prefix, batch), policy._goal_loss(prefix, moved))


def test_missing_goals_are_named_and_inference_needs_none():
    policy = _policy(1.0)
    batch = make_batch(2)
    with pytest.raises(ValueError, match="keyframe_goals=True"):
        policy(batch)
    chunk = policy.eval().predict_chunk(batch)
    assert chunk.shape == (2, 4, SPEC.action_dim)
