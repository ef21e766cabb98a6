"""Relative (delta) joint actions: pairing by feature names, exact round trip, policy outputs stay absolute."""

import pytest
import torch

from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
from vla.policy import VLAPolicy
from vla.processing.relative import chunk_deltas, relative_pairs, to_absolute, to_relative
from vla.types import FeatureSpec

JOINTS = ("yaw", "shoulder", "elbow")
SPEC = FeatureSpec(
    cameras=("front",), image_shape=(3, 32, 32), state_dim=4, action_dim=4, gripper_dims=(3,),
    state_names=(*JOINTS, "gripper"), action_names=(*(f"{j}.target" for j in JOINTS), "gripper"),
)


def test_pairs_match_target_names_and_skip_the_gripper():
    assert relative_pairs(SPEC) == ([0, 1, 2], [0, 1, 2])
    unnamed = FeatureSpec(cameras=("front",), image_shape=(3, 32, 32), state_dim=4, action_dim=4)
    with pytest.raises(ValueError, match="relative_actions=false"):
        relative_pairs(unnamed)


def test_round_trip_is_exact_and_the_gripper_is_untouched():
    pairs = relative_pairs(SPEC)
    actions, state = torch.randn(2, 5, 4), torch.randn(2, 4)
    rel = to_relative(actions, state, pairs)
    torch.testing.assert_close(rel[..., :3], actions[..., :3] - state[:, None, :3])
    torch.testing.assert_close(rel[..., 3], actions[..., 3])
    torch.testing.assert_close(to_absolute(rel, state, pairs), actions)
    samples = rel[:, None].expand(2, 3, 5, 4)  # a sample axis, as the flow head returns
    torch.testing.assert_close(to_absolute(samples, state, pairs), actions[:, None].expand(2, 3, 5, 4))


def test_chunk_deltas_pad_with_the_episode_last_action():
    state = torch.arange(4.0)[:, None].repeat(1, 4)  # frames 0..3, one episode
    action = state + 1.0
    deltas = chunk_deltas(state, action, torch.full((4,), 4), torch.tensor([3]), 2, relative_pairs(SPEC))
    assert deltas[:, :3].tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]  # offset 1 repeats frame 3's action


def test_relative_policy_predicts_absolute_targets_near_the_state():
    torch.manual_seed(0)
    stats = {k: {"mean": torch.zeros(4), "std": torch.full((4,), 0.05), "min": -torch.ones(4), "max": torch.ones(4)}
             for k in ("observation.state", "action")}
    cfg = PolicyConfig(backbone=BackboneConfig(d_model=32, n_layers=1, n_heads=2, d_vision=32, vision_layers=1,
                                               vision_heads=2, stem_channels=[8, 16]),
                       head=HeadConfig(relative_actions=True, chunk_size=4, n_action_steps=2, n_heads=2))
    policy = VLAPolicy(cfg, SPEC, ["lift", "cube"], stats).eval()
    state = torch.tensor([[3.0, -2.0, 1.5, 0.0]])
    batch = {"observation.images.front": torch.rand(1, 3, 32, 32), "observation.state": state, "task": ["lift"]}
    chunk = policy.predict_chunk(batch)
    # An untrained head outputs small normalised deltas: the targets sit near the current joints.
    assert (chunk[0, :, :3] - state[0, :3]).abs().max() < 1.0
    train_batch = {**batch, "action": chunk + 0.01, "action_is_pad": torch.zeros(1, 4, dtype=torch.bool)}
    loss, _ = policy.train()(train_batch)
    assert torch.isfinite(loss)
