"""Robot interface: SimRobot, and the LeRobot adapter against a fake lerobot Robot (no hardware)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from control_helpers import FakeSO101, FakeSO101Config

from envs.config import EnvConfig, make_env
from envs.robots import get_robot
from vla.supervision.control_loop import ControlConfig, ControlLoop
from vla.supervision.robot import (
    CalibrationMap,
    GripperMap,
    JointMap,
    LeRobotRobotAdapter,
    RobotReadError,
    SimRobot,
    so101_calibration,
    square_resize,
)
from vla.types import IMAGE_PREFIX, STATE_KEY, TASK_KEY


@pytest.fixture
def fake(tmp_path):
    robot = FakeSO101(FakeSO101Config(id="test", calibration_dir=tmp_path))
    robot.connect()
    return robot


def test_joint_and_gripper_maps_round_trip():
    deg = JointMap.degrees("elbow_flex")
    assert deg.to_radians(90.0) == pytest.approx(math.pi / 2)
    assert deg.to_robot(deg.to_radians(-33.0)) == pytest.approx(-33.0)
    flipped = JointMap.degrees("wrist_roll", offset=0.1, sign=-1.0)
    assert flipped.to_radians(10.0) == pytest.approx(0.1 - math.radians(10.0))
    rng = JointMap.from_range("shoulder_pan", -2.0, 1.0)
    assert rng.to_radians(-100.0) == pytest.approx(-2.0) and rng.to_radians(100.0) == pytest.approx(1.0)
    g = GripperMap(open_value=60.0, closed_value=10.0)
    assert g.to_state(60.0) == 0.0 and g.to_state(10.0) == 1.0 and g.to_state(35.0) == pytest.approx(0.5)
    assert g.to_state(0.0) == 1.0  # squeezing past the closed reading is still "closed"
    assert g.to_robot(1.0) == 10.0 and g.to_robot(0.0) == 60.0
    with pytest.raises(ValueError, match="scale"):
        JointMap("x", 0.0)
    with pytest.raises(ValueError, match="open_value"):
        GripperMap(open_value=5.0, closed_value=5.0)


def test_so101_calibration_matches_the_simulated_arm():
    cal = so101_calibration()
    spec = get_robot("so101")
    assert [j.motor for j in cal.joints] == list(spec.arm_joints)
    # LeRobot's RANGE_0_100 spans the gripper joint range (-0.1745 .. 1.7453 rad in the MJCF), 0 = closed limit.
    span = 1.7453291995659765 + 0.17453297762778586
    assert cal.gripper.open_value == pytest.approx(100 * (spec.gripper_open_qpos + 0.17453297762778586) / span)
    assert cal.gripper.closed_value == pytest.approx(100 * (spec.gripper_closed_qpos + 0.17453297762778586) / span)
    assert cal.gripper.closed_value < 1.0 < 40.0 < cal.gripper.open_value < 60.0


def test_square_resize_crops_the_centre_instead_of_squashing():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :50] = 255  # only outside the centre square (columns 50..149)
    img[40:60, 90:110] = 128  # a square in the middle stays a square
    out = square_resize(img, 20)
    assert out.shape == (20, 20, 3) and out[:, :2].max() == 0
    marked = np.argwhere(out[..., 0] > 60)
    assert np.ptp(marked[:, 0]) == np.ptp(marked[:, 1])
    assert square_resize(out, 20) is out


def test_adapter_reads_in_project_units(fake):
    fake.present.update({"shoulder_pan": 90.0, "elbow_flex": -45.0})
    adapter = LeRobotRobotAdapter(fake, so101_calibration(), image_size=32, task="pick up the red cube")
    obs = adapter.read()
    state = obs[STATE_KEY]
    assert state.dtype == np.float32 and state.shape == (6,)
    assert state[0] == pytest.approx(math.pi / 2) and state[2] == pytest.approx(-math.pi / 4)
    assert 0.0 <= state[-1] <= 1.0
    for cam in ("front", "wrist"):
        img = obs[IMAGE_PREFIX + cam]
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        assert img[:, :14].mean() > 200 and img[:, 18:].mean() < 50  # resized, not scrambled
    assert obs[TASK_KEY] == "pick up the red cube"
    assert adapter.state_names == [*get_robot("so101").arm_joints, "gripper"]


def test_adapter_sends_robot_units_and_returns_what_reached_the_motors(tmp_path):
    fake = FakeSO101(FakeSO101Config(id="clip", calibration_dir=tmp_path, max_relative_target=5.0))
    adapter = LeRobotRobotAdapter(fake, so101_calibration(), image_size=32)
    adapter.connect()
    target = np.array([math.radians(20.0), 0.0, 0.0, 0.0, 0.0, 1.0])
    sent = adapter.send(target)
    assert fake.writes[-1]["shoulder_pan"] == pytest.approx(5.0)  # LeRobot capped the 20 degree jump
    assert sent[0] == pytest.approx(math.radians(5.0))  # and we report the capped target
    assert fake.writes[-1]["gripper"] == pytest.approx(45.0)  # closing from 50 toward ~0, capped at 5 per step
    assert sent[-1] == pytest.approx(so101_calibration().gripper.to_state(45.0))
    held = adapter.hold()
    np.testing.assert_allclose(held, sent)  # hold re-sends the last accepted target


def test_adapter_refuses_bad_actions_and_reports_read_failures(fake):
    adapter = LeRobotRobotAdapter(fake, so101_calibration(), image_size=32)
    with pytest.raises(ValueError, match="shape"):
        adapter.send(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        adapter.send(np.array([0, 0, np.nan, 0, 0, 0.0]))
    assert fake.writes == []
    fake.fail_next_read = True
    with pytest.raises(RobotReadError, match="status packet"):
        adapter.read()
    assert adapter.read()[STATE_KEY].shape == (6,)


def test_adapter_names_missing_motors_and_cameras(fake):
    cal = so101_calibration()
    wrong = CalibrationMap(cal.joints, GripperMap("jaw"), cal.cameras)
    with pytest.raises(ValueError, match="jaw"):
        LeRobotRobotAdapter(fake, wrong)
    with pytest.raises(ValueError, match="top"):
        LeRobotRobotAdapter(fake, so101_calibration({"front": "top"}))
    with pytest.raises(TypeError, match="get_observation"):
        LeRobotRobotAdapter(object(), cal)


def test_control_loop_drives_the_lerobot_adapter(fake):
    adapter = LeRobotRobotAdapter(fake, so101_calibration(), image_size=16)

    def predictor(obs):
        q = np.asarray(obs[STATE_KEY], dtype=np.float64)
        chunk = np.repeat(q[None], 6, axis=0)
        chunk[:, 0] += np.radians(1.0) * np.arange(1, 7)
        chunk[:, -1] = 0.0
        return chunk

    loop = ControlLoop(adapter, predictor, ControlConfig(hz=50.0, execute_steps=3))
    fake.fail_next_read = True  # the first read of the episode fails; the loop reads again next tick
    try:
        rep = loop.run_episode(max_steps=12)
    finally:
        loop.close()
    assert rep.stop_reason == "max_steps" and rep.faults["read"] == 1
    assert fake.present["shoulder_pan"] > 5.0  # degrees: it moved the real-units joint
    assert fake.present["gripper"] == pytest.approx(so101_calibration().gripper.open_value)


def test_sim_robot_hold_keeps_the_last_target():
    env = make_env(EnvConfig(task="pick_cube", image_size=16, cameras=["front"]))
    robot = SimRobot(env)
    obs = robot.reset(seed=1)
    assert obs[IMAGE_PREFIX + "front"].shape == (16, 16, 3) and robot.cameras == ("front",)
    target = robot.measured_action()
    target[0] += 0.05
    target[-1] = 1.0
    robot.send(target)
    held = robot.hold()
    np.testing.assert_allclose(held, target)  # not the measured (sagging, half-closed) position
    with pytest.raises(ValueError, match="NaN"):
        robot.send(np.full(robot.action_dim, np.nan))
    env.close()
