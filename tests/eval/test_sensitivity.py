"""Scene sensitivity: the spread of a policy's plan across scenes, and the demos' spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from standins import ExpertPolicy, FrozenPolicy, expert_factory

from envs.config import EnvConfig
from vla.data.dataset import FrameStore
from vla.eval.sensitivity import demo_spread, keyframe_goal_error, planned_spread
from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
from vla.policy import VLAPolicy
from vla.types import FeatureSpec

PICK_PLACE = EnvConfig(task="pick_place", cameras=[])
SEEDS = range(100_000, 100_006)


def test_a_policy_blind_to_the_scene_plans_the_same_action_everywhere():
    spread = planned_spread(lambda env, device: FrozenPolicy(env), PICK_PLACE, SEEDS)
    assert spread.shape == (7,) and np.all(spread < 1e-6)  # float noise of the settled home pose


def test_the_expert_turns_toward_each_scene_s_cube():
    spread = planned_spread(expert_factory, PICK_PLACE, SEEDS)
    assert spread[0] > 0.01  # base yaw: the named cube is somewhere else in every scene
    assert spread[-1] == 0  # the gripper stays open while approaching


def test_plan_step_is_checked_against_the_chunk():
    with pytest.raises(ValueError, match="outside the policy's chunk"):
        planned_spread(lambda env, device: ExpertPolicy(env), PICK_PLACE, SEEDS, step=50)
    with pytest.raises(ValueError, match="at least 2 scenes"):
        planned_spread(expert_factory, PICK_PLACE, [100_000])


def test_demo_spread_reads_each_episode_at_the_step_and_holds_the_last_action_of_short_ones():
    # Episode 0: actions 0, 1, 2 (first dim); episode 1: actions 10, 11 -- at step 2 it has ended.
    action = torch.zeros(5, 2)
    action[:, 0] = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0])
    spec = FeatureSpec(cameras=("front",), image_shape=(3, 4, 4), state_dim=1, action_dim=2)
    store = FrameStore(spec, {"observation.images.front": torch.zeros(5, 3, 4, 4, dtype=torch.uint8)},
                       torch.zeros(5, 1), action, torch.tensor([0, 0, 0, 1, 1]), torch.zeros(5, dtype=torch.long),
                       ["t"])
    np.testing.assert_allclose(demo_spread(store, 0), [5.0, 0.0])  # 0 vs 10
    np.testing.assert_allclose(demo_spread(store, 2), [4.5, 0.0])  # 2 vs 11 (held)


def _goal_store() -> FrameStore:
    # Three episodes of 3 frames; gripper (action dim 1) closes at frame 1 and opens at frame 2, except in
    # the last episode, which never opens (a pick without a release). State j0 = 10 * episode + frame.
    spec = FeatureSpec(cameras=("front",), image_shape=(3, 16, 16), state_dim=2, action_dim=2, gripper_dims=(1,))
    episode = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    gripper = torch.tensor([0.0, 1, 0, 0, 1, 0, 0, 1, 1])
    frame = torch.tensor([0.0, 1, 2] * 3)
    state = torch.stack([10.0 * episode + frame, torch.zeros(9)], 1)
    action = torch.stack([torch.zeros(9), gripper], 1)
    images = {"observation.images.front": torch.randint(0, 255, (9, 3, 16, 16), dtype=torch.uint8)}
    return FrameStore(spec, images, state, action, episode, torch.zeros(9, dtype=torch.long), ["pick the cube"])


def _unit_stats() -> dict[str, dict[str, torch.Tensor]]:
    # Mean 0, std 1: normalised state units equal raw ones, so expected errors read off the store directly.
    return {k: {"mean": torch.zeros(2), "std": torch.ones(2), "min": -torch.ones(2), "max": torch.ones(2)}
            for k in ("observation.state", "action")}


def test_keyframe_goal_error_beside_a_scene_blind_guess():
    store = _goal_store()
    backbone = BackboneConfig(d_model=32, n_layers=1, n_heads=2, stem_channels=[8], d_vision=32, vision_layers=1,
                              vision_heads=2, aug_shift_pad=0, aug_brightness=0.0, aug_contrast=0.0)
    head = HeadConfig(chunk_size=2, n_action_steps=1, n_layers=1, n_heads=2, goal_loss_weight=1.0)
    torch.manual_seed(0)
    policy = VLAPolicy(PolicyConfig(backbone, head), store.spec, ["pick", "the", "cube"], _unit_stats())
    error, blind = keyframe_goal_error(policy, store)
    assert error.shape == blind.shape == (2, 2)
    # Grasp j0 is 1, 11, 21 (median 11): blind error (10 + 0 + 10) / 3. Release j0 is 2, 12 (torch's median
    # of an even count is the lower middle value, 2): (0 + 10) / 2. Joint 1 never varies.
    np.testing.assert_allclose(blind[:, 0], [20 / 3, 5.0])
    np.testing.assert_allclose(blind[:, 1], [0.0, 0.0])
    assert np.all(error > 0) and np.all(np.isfinite(error))
    # With its goal head zeroed the policy predicts state 0 everywhere: the error is the mean |target|.
    torch.nn.init.zeros_(policy.goal_head.out.weight)
    torch.nn.init.zeros_(policy.goal_head.out.bias)
    error, _ = keyframe_goal_error(policy, store)
    np.testing.assert_allclose(error[:, 0], [(1 + 11 + 21) / 3, (2 + 12) / 2], rtol=1e-6)


def test_keyframe_goal_error_needs_a_goal_head():
    store = _goal_store()
    backbone = BackboneConfig(d_model=32, n_layers=1, n_heads=2, stem_channels=[8], d_vision=32, vision_layers=1,
                              vision_heads=2)
    policy = VLAPolicy(PolicyConfig(backbone, HeadConfig(chunk_size=2, n_action_steps=1, n_heads=2)), store.spec,
                       ["cube"], _unit_stats())
    with pytest.raises(ValueError, match="goal_loss_weight"):
        keyframe_goal_error(policy, store)
