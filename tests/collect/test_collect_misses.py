"""Deliberate missed grasps in the demonstrations: the wrong expert misses, the data holds the recovery."""

from __future__ import annotations

import numpy as np
import pytest

from envs.config import EnvConfig
from envs.expert import CLOSE_TICKS, ScriptedExpert
from envs.tabletop import TabletopEnv
from vla.data.collect import CollectConfig, MissConfig, NoiseConfig, run_expert_episode

ENV = EnvConfig(task="pick_place", image_size=16, cameras=["front"])
ALWAYS_MISS = MissConfig(prob=1.0)
GRIPPER = -1  # the gripper is the last entry of the state and of the action


def test_an_aim_offset_closes_the_jaws_beside_the_cube():
    env = TabletopEnv(task="pick_place", cameras=())
    env.reset(seed=3)
    cube = env.episode.object_index
    # Along the hand's yaw, i.e. across the jaws' closing axis: aimed along that axis instead, a finger
    # lands on the cube's top.
    yaw = ScriptedExpert(env)._grasp_yaw(cube)
    offset = 0.05 * np.array([np.cos(yaw), np.sin(yaw)])
    wrong = ScriptedExpert(env, aim_offset=offset)
    closing = 0
    for _ in range(80):
        env.step(wrong.act())
        closing = closing + 1 if wrong.phase == "grasp" else 0
        if closing > CLOSE_TICKS + 2:
            break
    assert closing > CLOSE_TICKS + 2, f"the wrong expert never closed its jaws (phase {wrong.phase})"
    miss = env.ee_pos()[:2] - env.cube_pos(cube)[:2]
    assert np.linalg.norm(miss - offset) < 0.01, f"closed {miss} off the cube, aimed {offset}"
    assert not env.is_grasped(cube) and env.gripper_state() > 0.8  # shut on air
    env.close()


def _missed_episodes(seeds: range) -> list:
    return [r for r in (run_expert_episode(ENV, s, NoiseConfig(), ALWAYS_MISS) for s in seeds) if r.missed]


def test_a_missed_grasp_is_recorded_with_the_correct_experts_recovery():
    missed = _missed_episodes(range(6))
    assert missed, "no seed in 0..5 produced a missed grasp with miss.prob=1"
    for result in missed:
        assert result.success, f"seed {result.seed}: the expert did not recover from the miss"
        state = np.stack([f["observation.state"] for f in result.frames])
        action = np.stack([f["action"] for f in result.frames])
        shut = np.flatnonzero(state[:, GRIPPER] > 0.8)
        assert shut.size, f"seed {result.seed}: the jaws never shut on air"
        # Where the wrong expert's jaws are shut on air, the recorded action opens them: the data holds
        # the correct expert's answer to the miss, never the wrong expert's closing.
        assert np.all(action[shut[0], GRIPPER] < 0.5), f"seed {result.seed}: recorded {action[shut[0]]}"
        # The grasp that follows holds the cube (the jaws stop on it, short of shut).
        regrasp = np.flatnonzero((state[shut[-1]:, GRIPPER] > 0.3) & (state[shut[-1]:, GRIPPER] < 0.8))
        assert regrasp.size, f"seed {result.seed}: no grasp after the miss"


def test_without_misses_the_demos_are_unchanged():
    plain = run_expert_episode(ENV, 4, NoiseConfig(0.01, 0.3))
    off = run_expert_episode(ENV, 4, NoiseConfig(0.01, 0.3), MissConfig(prob=0.0))
    assert not plain.missed and not off.missed and len(plain.frames) == len(off.frames)
    for a, b in zip(plain.frames, off.frames, strict=True):
        np.testing.assert_array_equal(a["action"], b["action"])
        np.testing.assert_array_equal(a["observation.state"], b["observation.state"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"prob": 1.5}, "miss.prob"), ({"min_offset": 0.05, "max_offset": 0.04}, "miss.min_offset"),
     ({"min_offset": 0.0}, "miss.min_offset"), ({"max_ticks": 0}, "miss.max_ticks")],
)
def test_bad_miss_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CollectConfig(miss=MissConfig(**kwargs))
