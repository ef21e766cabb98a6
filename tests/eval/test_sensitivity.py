"""Scene sensitivity: the spread of a policy's plan across scenes, and the demos' spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from standins import ExpertPolicy, FrozenPolicy, expert_factory

from envs.config import EnvConfig
from vla.data.dataset import FrameStore
from vla.eval.sensitivity import demo_spread, planned_spread
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
