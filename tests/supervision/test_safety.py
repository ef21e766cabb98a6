"""Safety filter: each hard limit, NaN/inf, bad shapes, and that the expert's own actions pass untouched."""

from __future__ import annotations

import numpy as np
import pytest

from envs.expert import ScriptedExpert
from envs.kinematics import top_down_rotation
from envs.tabletop import TabletopEnv
from vla.supervision.config import SafetyConfig
from vla.supervision.safety import SafetyFilter


@pytest.fixture(scope="module")
def env():
    e = TabletopEnv(task="pick_cube", cameras=())
    e.reset(seed=0)
    yield e
    e.close()


def _command(env: TabletopEnv) -> np.ndarray:
    return np.append(env.arm_qpos(), 0.0)


def _ik(f: SafetyFilter, env: TabletopEnv, pos: list[float]) -> np.ndarray:
    """Joint targets reaching ``pos`` top-down (the solver caps its steps, so iterate from home)."""
    rot = env.ee_rot()
    target_rot = top_down_rotation(float(np.arctan2(rot[1, 0], rot[0, 0])))
    qpos = env.data.qpos.copy()
    for _ in range(5):
        qpos[f.ik.qadr] = f.ik.solve(qpos, np.array(pos), target_rot)
    np.testing.assert_allclose(f.forward(qpos[f.ik.qadr])[0], pos, atol=2e-3)
    return qpos[f.ik.qadr]


@pytest.mark.parametrize("task", ["pick_cube", "pick_place", "stack"])
def test_expert_actions_pass_untouched(task):
    env = TabletopEnv(task=task, cameras=())
    env.reset(seed=100_000)
    f = SafetyFilter(env, SafetyConfig())
    expert, previous = ScriptedExpert(env), _command(env)
    for _ in range(env.max_steps):
        action = expert.act()
        result = f.filter(action, previous)
        assert not result.rejected and not result.clamps, (expert.phase, result.clamps, result.reason)
        np.testing.assert_allclose(result.actions[0], action, atol=1e-6)
        previous = result.actions[0]
        _, _, terminated, truncated, info = env.step(previous)
        if terminated or truncated:
            break
    assert info["is_success"]
    env.close()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_chunk_is_rejected_and_holds(env, bad):
    f = SafetyFilter(env, SafetyConfig())
    previous = _command(env)
    chunk = np.repeat(previous[None], 3, axis=0)
    chunk[1, 2] = bad
    result = f.filter(chunk, previous)
    assert result.rejected and result.reason == "non_finite"
    np.testing.assert_array_equal(result.actions, np.repeat(previous[None], 3, axis=0))


def test_wrong_shape_is_rejected(env):
    f = SafetyFilter(env, SafetyConfig())
    previous = _command(env)
    result = f.filter(np.zeros((2, 5)), previous)
    assert result.rejected and result.reason == "bad_shape"
    assert result.actions.shape == (2, 7)


def test_joint_limit_clamps(env):
    f = SafetyFilter(env, SafetyConfig())
    previous = _command(env)
    previous[5] = 2.8  # the flange roll spins the tool about its axis: the hand does not move
    action = previous.copy()
    action[5] = 3.5
    result = f.filter(action, previous)
    assert not result.rejected and result.clamps == {"joint_limit": 1}
    assert result.actions[0, 5] == pytest.approx(env.joint_limits[5, 1])


def test_joint_margin_keeps_targets_inside(env):
    f = SafetyFilter(env, SafetyConfig(joint_margin=0.1))
    previous = _command(env)
    previous[5] = 2.75
    action = previous.copy()
    action[5] = 2.85
    result = f.filter(action, previous)
    assert result.actions[0, 5] == pytest.approx(env.joint_limits[5, 1] - 0.1)


def test_joint_step_clamps_along_the_chunk(env):
    f = SafetyFilter(env, SafetyConfig(max_joint_speed=5.0))  # 0.5 rad per tick at 10 Hz
    previous = _command(env)
    chunk = np.repeat(previous[None], 3, axis=0)
    chunk[:, 5] = previous[5] + 1.2
    result = f.filter(chunk, previous)
    assert result.clamps == {"joint_step": 2}  # the third action is within 0.5 rad of the second
    np.testing.assert_allclose(result.actions[:, 5], previous[5] + np.array([0.5, 1.0, 1.2]))


def test_gripper_range_clamps(env):
    f = SafetyFilter(env, SafetyConfig())
    previous = _command(env)
    action = previous.copy()
    action[-1] = 1.7
    result = f.filter(action, previous)
    assert result.clamps == {"gripper_range": 1} and result.actions[0, -1] == 1.0


def test_hand_below_the_table_is_lifted(env):
    f = SafetyFilter(env, SafetyConfig())
    previous = np.append(_ik(f, env, [0.45, 0.0, 0.05]), 0.0)
    action = np.append(_ik(f, env, [0.45, 0.0, -0.01]), 0.0)
    assert f.forward(action[:6])[0][2] < 0  # the raw target is under the table surface
    result = f.filter(action, previous)
    assert not result.rejected and "below_table" in result.clamps
    pos, _, tip = f.forward(result.actions[0, :6])
    assert pos[2] > 0 and tip >= -1e-3
    np.testing.assert_allclose(pos[:2], [0.45, 0.0], atol=3e-3)  # only lifted, not moved sideways


def test_fingertips_below_the_table_are_lifted(env):
    f = SafetyFilter(env, SafetyConfig())
    previous = np.append(_ik(f, env, [0.45, 0.0, 0.05]), 0.0)
    action = np.append(_ik(f, env, [0.45, 0.0, 0.012]), 0.0)  # hand above the table, fingertips under it
    pos, _, tip = f.forward(action[:6])
    assert pos[2] > 0.01 and tip < 0
    result = f.filter(action, previous)
    assert result.clamps == {"below_table": 1}
    assert f.forward(result.actions[0, :6])[2] >= -1e-3


def test_workspace_box_clamps(env):
    cfg = SafetyConfig(workspace_low=[0.2, -0.1, 0.0], workspace_high=[0.6, 0.1, 0.4])
    f = SafetyFilter(env, cfg)
    previous = np.append(_ik(f, env, [0.45, 0.08, 0.10]), 0.0)
    action = np.append(_ik(f, env, [0.45, 0.14, 0.10]), 0.0)
    result = f.filter(action, previous)
    assert result.clamps == {"workspace": 1}
    assert f.forward(result.actions[0, :6])[0][1] <= 0.1 + 1e-3
    assert result.ee_targets.shape == (1, 3)


def test_default_workspace_follows_the_robot_reach(env):
    f = SafetyFilter(env, SafetyConfig(workspace_margin=0.1, workspace_height=0.3))
    np.testing.assert_allclose(f.ws_low, [env.reach_x[0] - 0.1, env.reach_y[0] - 0.1, 0.0])
    np.testing.assert_allclose(f.ws_high, [env.reach_x[1] + 0.1, env.reach_y[1] + 0.1, 0.3])


def test_target_that_cannot_be_made_safe_in_one_tick_is_rejected(env):
    # A box far from where the hand is: projecting into it needs more than one tick of joint motion.
    cfg = SafetyConfig(workspace_low=[0.50, 0.20, 0.02], workspace_high=[0.52, 0.22, 0.04], max_joint_speed=1.0)
    f = SafetyFilter(env, cfg)
    previous = _command(env)
    result = f.filter(previous, previous)
    assert result.rejected and result.reason == "unreachable"
    np.testing.assert_array_equal(result.actions[0], previous)
