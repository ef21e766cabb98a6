"""Robot descriptions: what a task needs to know about an arm, and nothing about any task.

A robot is an MJCF file plus names: the arm joints (one position actuator each), the gripper
actuator and the control values that mean "open" and "closed", the end-effector site, and a home
configuration. Scenes attach the robot's MJCF under the prefix ``robot/``; everything else refers
to the robot through these names, so tasks, experts and the gate run unchanged on every arm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

ASSETS = Path(__file__).parent / "assets"
PREFIX = "robot/"


@dataclass(frozen=True)
class RobotSpec:
    name: str
    mjcf: Path
    root_body: str
    arm_joints: tuple[str, ...]
    arm_actuators: tuple[str, ...]
    gripper_actuator: str
    gripper_joints: tuple[str, ...]
    gripper_open_ctrl: float
    gripper_closed_ctrl: float
    # Finger joint positions when fully open / closed on nothing: they turn the measured joint into
    # the observed gripper state (0 open .. 1 closed), the same scale as the action.
    gripper_open_qpos: float
    gripper_closed_qpos: float
    ee_site: str
    finger_bodies: tuple[str, ...]
    wrist_camera: str
    home_qpos: tuple[float, ...]  # arm joints, then gripper joints
    base_pos: tuple[float, float, float]
    # Rotation about the tool axis that makes the jaws close along the site's y axis.
    tool_yaw_offset: float = 0.0
    # Reachable region the tasks may place objects in, in the robot's base frame (x, y ranges).
    reach_x: tuple[float, float] = (0.32, 0.56)
    reach_y: tuple[float, float] = (-0.22, 0.22)
    # Cartesian speed limit the scripted expert moves at (m/s); small arms move slower.
    expert_speed: float = 0.35
    # Height of the tool above a cube's top where the expert hovers before descending and
    # carries over other cubes; arms whose wrist cannot point straight down high up hover lower.
    hover_clearance: float = 0.06
    # Side of the largest cube the gripper holds comfortably; the scene scales objects by it.
    cube_half: float = 0.02
    # Edits the robot's MjSpec before it is attached (e.g. add a wrist camera the file lacks).
    prepare: Callable[[mujoco.MjSpec], None] | None = None

    @property
    def n_arm(self) -> int:
        return len(self.arm_joints)

    def prefixed(self, name: str) -> str:
        return PREFIX + name

    def gripper_state(self, finger_qpos: float) -> float:
        """Map a finger joint position onto 0 (open) .. 1 (closed)."""
        span = self.gripper_closed_qpos - self.gripper_open_qpos
        return float(np.clip((finger_qpos - self.gripper_open_qpos) / span, 0.0, 1.0))

    def gripper_ctrl(self, state: float) -> float:
        return self.gripper_open_ctrl + float(state) * (self.gripper_closed_ctrl - self.gripper_open_ctrl)


def _arm6() -> RobotSpec:
    return RobotSpec(
        name="arm6",
        mjcf=ASSETS / "arm6.xml",
        root_body="base",
        arm_joints=("yaw", "shoulder", "elbow", "forearm_roll", "wrist_pitch", "flange_roll"),
        arm_actuators=("yaw", "shoulder", "elbow", "forearm_roll", "wrist_pitch", "flange_roll"),
        gripper_actuator="gripper",
        gripper_joints=("left_finger", "right_finger"),
        gripper_open_ctrl=0.04,
        gripper_closed_ctrl=0.0,
        gripper_open_qpos=0.04,
        gripper_closed_qpos=0.0,
        ee_site="ee",
        finger_bodies=("left_finger", "right_finger"),
        wrist_camera="wrist",
        home_qpos=(0.0, -0.35, 1.95, 0.0, 1.55, 0.0, 0.04, 0.04),
        base_pos=(0.0, 0.0, 0.0),
    )


def _so101() -> RobotSpec:
    from envs.so101 import so101_spec

    return so101_spec()


ROBOTS: dict[str, Callable[[], RobotSpec]] = {"arm6": _arm6, "so101": _so101}


def get_robot(name: str) -> RobotSpec:
    if name not in ROBOTS:
        raise ValueError(f"unknown robot {name!r}; choose from {sorted(ROBOTS)}")
    return ROBOTS[name]()
