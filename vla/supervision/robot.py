"""The robot the control loop drives: read an observation, send a joint-target action, hold, stop.

Everything above this interface speaks the project's units: observations are LeRobot feature
names (``observation.images.<cam>`` uint8 HxWx3, ``observation.state`` = joint positions in radians
+ gripper state 0 open .. 1 closed, ``task``), actions are target joint positions in radians + the
gripper state. Robot-specific units live here, at the edge:

* :class:`SimRobot` wraps a :class:`~envs.tabletop.TabletopEnv` (the embedded default); sending
  an action advances the simulation by one control period.
* :class:`LeRobotRobotAdapter` wraps a LeRobot robot object (e.g. ``SO101Follower``), whose
  ``get_observation()`` / ``send_action()`` speak ``{"<motor>.pos": value, "<camera>": HxWx3}``
  in calibrated motor units, through a :class:`CalibrationMap` (see there).

"Hold position" re-sends the last target the robot accepted rather than the measured position:
position servos sag under gravity, so commanding the measured joints would creep downwards tick by
tick, and commanding the measured gripper would loosen a grasp. Before anything was sent it is the
measured position.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vla.types import IMAGE_PREFIX, STATE_KEY, TASK_KEY

if TYPE_CHECKING:
    from envs.tabletop import TabletopEnv


class RobotReadError(RuntimeError):
    """Reading the robot failed (bus error, missing key, camera dropout); the loop holds and retries."""


class Robot(ABC):
    """Joint-target robot with ``n`` arm joints + one gripper; subclasses map to their own units."""

    def __init__(self) -> None:
        self.last_sent: np.ndarray | None = None

    @property
    @abstractmethod
    def state_names(self) -> list[str]: ...

    @property
    @abstractmethod
    def action_names(self) -> list[str]: ...

    @property
    @abstractmethod
    def cameras(self) -> tuple[str, ...]: ...

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def gripper_dims(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self.action_names) if "gripper" in n.lower())

    @abstractmethod
    def read(self) -> dict[str, Any]:
        """The current observation; raises :class:`RobotReadError` when it cannot be read."""

    @abstractmethod
    def _send(self, action: np.ndarray) -> np.ndarray:
        """Send a validated action; return what was actually commanded (the robot may clip it)."""

    @abstractmethod
    def measured_action(self) -> np.ndarray:
        """The current measured position expressed as an action (what holding still would command)."""

    def connect(self) -> None:
        """Open the connection (no-op for robots that are always available)."""
        return None

    def disconnect(self) -> None:
        """Release the robot; a real arm may go limp, so stop() first."""
        return None

    def validate(self, action: Any) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.action_dim,):
            raise ValueError(f"action has shape {a.shape}, expected ({self.action_dim},): "
                             f"{', '.join(self.action_names)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has NaN/inf at {np.flatnonzero(~np.isfinite(a)).tolist()}; not sent")
        return a

    def send(self, action: Any) -> np.ndarray:
        sent = np.asarray(self._send(self.validate(action)), dtype=np.float64)
        self.last_sent = sent.copy()
        return sent

    def hold(self) -> np.ndarray:
        """Keep the robot where it is (last accepted target, else the measured position)."""
        target = self.last_sent if self.last_sent is not None else self.measured_action()
        return self.send(target)

    def stop(self) -> None:
        """Safe stop: hold position. The connection stays open so the arm keeps its torque."""
        self.hold()


class SimRobot(Robot):
    """A TabletopEnv driven as a robot; ``reset(seed)`` starts an episode."""

    def __init__(self, env: TabletopEnv) -> None:
        super().__init__()
        self.env = env
        self._obs: dict[str, Any] | None = None
        self.info: dict[str, Any] = {}
        self.terminated = self.truncated = False

    @property
    def state_names(self) -> list[str]:
        return list(self.env.state_names)

    @property
    def action_names(self) -> list[str]:
        return list(self.env.action_names)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.env.cameras)

    @property
    def success(self) -> bool:
        return bool(self.info.get("is_success", False))

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        self._obs, self.info = self.env.reset(seed=seed)
        self.terminated = self.truncated = False
        self.last_sent = None
        return self.read()

    def read(self) -> dict[str, Any]:
        if self._obs is None:
            raise RobotReadError("SimRobot has no observation yet: call reset(seed) first")
        return dict(self._obs)

    def _send(self, action: np.ndarray) -> np.ndarray:
        self._obs, _, self.terminated, self.truncated, self.info = self.env.step(action)
        return action

    def measured_action(self) -> np.ndarray:
        return np.append(self.env.arm_qpos(), self.env.gripper_state())


# ---------------------------------------------------------------------------------------- LeRobot


@dataclass(frozen=True)
class JointMap:
    """One arm joint: ``radians = offset + scale * value`` where ``value`` is the robot's reading.

    LeRobot's ``MotorNormMode.DEGREES`` gives ``scale = pi/180`` (``offset`` = the simulated joint's
    angle at the calibrated zero); ``RANGE_M100_100`` maps [-100, 100] onto the joint's calibrated
    range, see :meth:`from_range`. A negative scale flips a joint that turns the other way.
    """

    motor: str
    scale: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError(f"JointMap({self.motor!r}).scale must be finite and non-zero, got {self.scale}")

    @classmethod
    def degrees(cls, motor: str, offset: float = 0.0, sign: float = 1.0) -> JointMap:
        return cls(motor, sign * math.pi / 180.0, offset)

    @classmethod
    def from_range(cls, motor: str, low: float, high: float) -> JointMap:
        """``RANGE_M100_100``: -100 is ``low`` radians, +100 is ``high`` radians."""
        return cls(motor, (high - low) / 200.0, (high + low) / 2.0)

    def to_radians(self, value: float) -> float:
        return self.offset + self.scale * float(value)

    def to_robot(self, radians: float) -> float:
        return (float(radians) - self.offset) / self.scale


@dataclass(frozen=True)
class GripperMap:
    """Gripper state 0 (open) .. 1 (closed) <-> the robot's gripper value (``RANGE_0_100`` on the SO-101)."""

    motor: str = "gripper"
    open_value: float = 100.0
    closed_value: float = 0.0

    def __post_init__(self) -> None:
        if self.open_value == self.closed_value:
            raise ValueError(f"GripperMap({self.motor!r}) needs open_value != closed_value, both are {self.open_value}")

    def to_state(self, value: float) -> float:
        s = (float(value) - self.open_value) / (self.closed_value - self.open_value)
        return float(np.clip(s, 0.0, 1.0))

    def to_robot(self, state: float) -> float:
        return self.open_value + float(np.clip(state, 0.0, 1.0)) * (self.closed_value - self.open_value)


@dataclass(frozen=True)
class CalibrationMap:
    """How a LeRobot robot's motor units map onto the simulated robot's joints the policy learned in.

    ``joints`` are in the order of the policy's state/action dims; ``cameras`` maps the policy's
    camera names onto the robot's camera keys (e.g. ``{"front": "front", "wrist": "wrist"}``).
    """

    joints: tuple[JointMap, ...]
    gripper: GripperMap
    cameras: Mapping[str, str]

    @property
    def state_names(self) -> list[str]:
        return [*(j.motor for j in self.joints), "gripper"]

    @property
    def action_names(self) -> list[str]:
        return [*(f"{j.motor}.target" for j in self.joints), "gripper"]


SO101_ARM = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")


def _mjcf_joint_range(mjcf: str, joint: str) -> tuple[float, float]:
    for el in ET.parse(mjcf).getroot().iter("joint"):
        if el.get("name") == joint and el.get("range"):
            low, high = (float(v) for v in el.get("range", "").split())
            return low, high
    raise ValueError(f"joint {joint!r} with a range not found in {mjcf}")


def so101_calibration(cameras: Mapping[str, str] | None = None) -> CalibrationMap:
    """SO-101 follower with LeRobot's default ``use_degrees=True`` and our simulated SO-101 (robot=so101).

    The simulated arm is the ``so101_new_calib`` MJCF, whose joint zeros are the LeRobot calibration's
    zeros, so body joints map degrees -> radians with no offset. The gripper reads ``RANGE_0_100``
    across the gripper joint's range (0 at the closed limit); our gripper state 0/1 are the
    simulated robot's open/closed finger angles placed on that scale.
    """
    from envs.robots import get_robot
    from envs.so101 import so101_mjcf

    spec = get_robot("so101")
    low, high = _mjcf_joint_range(str(so101_mjcf()), spec.gripper_joints[0])

    def percent(q: float) -> float:
        return 100.0 * (q - low) / (high - low)

    return CalibrationMap(
        joints=tuple(JointMap.degrees(j) for j in SO101_ARM),
        gripper=GripperMap("gripper", percent(spec.gripper_open_qpos), percent(spec.gripper_closed_qpos)),
        cameras=dict(cameras) if cameras is not None else {"front": "front", "wrist": "wrist"},
    )


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square (the policy's cameras are square; squashing would distort it), then resize."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = np.ascontiguousarray(image[top : top + side, left : left + side])
    import cv2  # a lerobot dependency; INTER_AREA averages instead of aliasing when shrinking

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


class LeRobotRobotAdapter(Robot):
    """Drive a LeRobot robot (``get_observation`` / ``send_action`` dicts) in the project's units.

    Images are centre-cropped to a square and resized to ``image_size``, as the policy was trained.
    ``task`` is the instruction given to the policy.
    """

    def __init__(self, robot: Any, calibration: CalibrationMap, image_size: int = 96, task: str = "") -> None:
        super().__init__()
        for name in ("get_observation", "send_action", "observation_features", "action_features"):
            if not hasattr(robot, name):
                raise TypeError(f"{type(robot).__name__} lacks {name!r}; expected a lerobot.robots.Robot")
        self.robot, self.cal, self.image_size, self.task = robot, calibration, image_size, task
        motors = [f"{j.motor}.pos" for j in calibration.joints] + [f"{calibration.gripper.motor}.pos"]
        missing = [m for m in motors if m not in robot.action_features]
        if missing:
            raise ValueError(f"robot action features {sorted(robot.action_features)} lack {missing}; "
                             "fix the CalibrationMap's motor names")
        missing = [c for c in calibration.cameras.values() if c not in robot.observation_features]
        if missing:
            raise ValueError(f"robot cameras {sorted(robot.observation_features)} lack {missing}; "
                             "fix CalibrationMap.cameras (policy camera -> robot camera key)")
        self._motors = motors

    @property
    def state_names(self) -> list[str]:
        return self.cal.state_names

    @property
    def action_names(self) -> list[str]:
        return self.cal.action_names

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.cal.cameras)

    def connect(self) -> None:
        if not self.robot.is_connected:
            self.robot.connect()

    def disconnect(self) -> None:
        if self.robot.is_connected:
            self.robot.disconnect()

    def _raw(self) -> dict[str, Any]:
        try:
            raw = self.robot.get_observation()
        except Exception as exc:
            raise RobotReadError(f"{type(self.robot).__name__}.get_observation() failed: {exc}") from exc
        missing = [k for k in [*self._motors, *self.cal.cameras.values()] if k not in raw]
        if missing:
            raise RobotReadError(f"observation lacks {missing}")
        return raw

    def _state(self, raw: Mapping[str, Any]) -> np.ndarray:
        joints = [j.to_radians(raw[f"{j.motor}.pos"]) for j in self.cal.joints]
        state = np.array([*joints, self.cal.gripper.to_state(raw[f"{self.cal.gripper.motor}.pos"])], np.float32)
        if not np.all(np.isfinite(state)):
            raise RobotReadError(f"non-finite joint reading {state.tolist()}")
        return state

    def read(self) -> dict[str, Any]:
        raw = self._raw()
        obs: dict[str, Any] = {}
        for ours, theirs in self.cal.cameras.items():
            img = np.asarray(raw[theirs])
            if img.ndim != 3 or img.shape[2] != 3:
                raise RobotReadError(f"camera {theirs!r} gave shape {img.shape}, expected HxWx3")
            obs[IMAGE_PREFIX + ours] = square_resize(img.astype(np.uint8, copy=False), self.image_size)
        obs[STATE_KEY] = self._state(raw)
        obs[TASK_KEY] = self.task
        return obs

    def to_robot_action(self, action: Sequence[float]) -> dict[str, float]:
        a = np.asarray(action, dtype=np.float64)
        out = {f"{j.motor}.pos": j.to_robot(a[i]) for i, j in enumerate(self.cal.joints)}
        out[f"{self.cal.gripper.motor}.pos"] = self.cal.gripper.to_robot(a[-1])
        return out

    def from_robot_action(self, values: Mapping[str, float], default: Sequence[float]) -> np.ndarray:
        """Robot action dict -> our units; motors absent from ``values`` keep ``default``."""
        out = np.array(default, dtype=np.float64)
        for i, j in enumerate(self.cal.joints):
            if f"{j.motor}.pos" in values:
                out[i] = j.to_radians(values[f"{j.motor}.pos"])
        if f"{self.cal.gripper.motor}.pos" in values:
            out[-1] = self.cal.gripper.to_state(values[f"{self.cal.gripper.motor}.pos"])
        return out

    def _send(self, action: np.ndarray) -> np.ndarray:
        sent = self.robot.send_action(self.to_robot_action(action))
        # LeRobot returns what reached the motors (possibly clipped by max_relative_target).
        return self.from_robot_action(sent or {}, action)

    def measured_action(self) -> np.ndarray:
        return self._state(self._raw()).astype(np.float64)
