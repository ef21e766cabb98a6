"""Stand-in robots, policies and gates that keep the control-loop tests fast and deterministic."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from lerobot.robots import Robot as LeRobotRobot
from lerobot.robots import RobotConfig
from lerobot.robots.utils import ensure_safe_goal_position

from vla.supervision.control_loop import GateTick
from vla.supervision.robot import Robot, RobotReadError
from vla.types import IMAGE_PREFIX, STATE_KEY, TASK_KEY

N_ARM = 3
HORIZON = 8


class FakeRobot(Robot):
    """A 3-joint arm + gripper whose joints reach each target in one tick; no physics, no rendering."""

    def __init__(self, fail_reads: set[int] | None = None, image_size: int = 8) -> None:
        super().__init__()
        self.q = np.zeros(N_ARM + 1)
        self.sent: list[np.ndarray] = []
        self.reads = 0
        self.fail_reads = fail_reads or set()
        self.stopped = 0
        self.image_size = image_size

    @property
    def state_names(self) -> list[str]:
        return [*(f"j{i}" for i in range(N_ARM)), "gripper"]

    @property
    def action_names(self) -> list[str]:
        return [*(f"j{i}.target" for i in range(N_ARM)), "gripper"]

    @property
    def cameras(self) -> tuple[str, ...]:
        return ("front",)

    def read(self) -> dict[str, Any]:
        i = self.reads
        self.reads += 1
        if i in self.fail_reads:
            raise RobotReadError(f"bus timeout on read {i}")
        img = np.full((self.image_size, self.image_size, 3), 100, np.uint8)
        return {IMAGE_PREFIX + "front": img, STATE_KEY: self.q.astype(np.float32), TASK_KEY: "move"}

    def _send(self, action: np.ndarray) -> np.ndarray:
        self.q = action.copy()
        self.sent.append(action.copy())
        return action

    def measured_action(self) -> np.ndarray:
        return self.q.copy()

    def stop(self) -> None:
        self.stopped += 1
        super().stop()


def ramp_predictor(step: float = 0.01, latency_s: float = 0.0):
    """A healthy policy: every joint advances ``step`` per tick from the observed state."""

    def predict(obs: Mapping[str, Any]) -> np.ndarray:
        if latency_s:
            time.sleep(latency_s)
        q = np.asarray(obs[STATE_KEY], dtype=np.float64)
        chunk = q + step * np.arange(1, HORIZON + 1)[:, None]
        chunk[:, -1] = 0.0
        return chunk

    return predict


class CountingPredictor:
    """Wraps a predictor; ``bad(call_index)`` decides which calls misbehave and how."""

    def __init__(self, good, mode: str, bad_calls: set[int] | None = None, delay_s: float = 0.0) -> None:
        self.good, self.mode, self.bad_calls, self.delay_s = good, mode, bad_calls, delay_s
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, obs: Mapping[str, Any]) -> Any:
        with self.lock:
            i = self.calls
            self.calls += 1
        if self.bad_calls is not None and i not in self.bad_calls:
            return self.good(obs)
        if self.mode == "raise":
            raise RuntimeError("CUDA error: device-side assert (simulated)")
        if self.mode == "nan":
            chunk = self.good(obs)
            chunk[2, 1] = np.nan
            return chunk
        if self.mode == "shape":
            return self.good(obs)[:, :-1]
        if self.mode == "slow":
            time.sleep(self.delay_s)
            return self.good(obs)
        raise ValueError(self.mode)


@dataclass
class Decided:
    decision: str
    reason: str = ""


class ScriptedGate:
    """A tick gate deciding by chunk number: ``script[i]`` for the i-th proposal (approve after the end).

    Approve runs ``n_action_steps`` actions; veto holds and re-queries next tick; takeover lets a
    scripted operator drive ``operator_ticks`` ticks (gripper closed, arm backing off) then hands
    back; abort stops.
    """

    def __init__(self, script: list[str], operator_ticks: int = 3, n_action_steps: int = 2) -> None:
        self.script, self.operator_ticks, self.n_action_steps = list(script), operator_ticks, n_action_steps
        self.reset()

    def reset(self) -> None:
        self.proposals, self.queue, self.left, self.last, self.stopped = 0, [], 0, None, False

    def tick(self, obs: Mapping[str, Any], propose) -> GateTick:
        q = np.asarray(obs[STATE_KEY], dtype=np.float64)
        self.last = q if self.last is None else self.last
        decided = None
        if self.left == 0 and not self.queue:
            chunk = np.asarray(propose(1))
            i = self.proposals
            self.proposals += 1
            decided = Decided(self.script[i] if i < len(self.script) else "approve", f"chunk {i}")
            if decided.decision == "approve":
                self.queue = list(chunk[: self.n_action_steps])
            elif decided.decision == "takeover":
                self.left = self.operator_ticks
            elif decided.decision == "abort":
                self.stopped = True
                return GateTick(self.last.copy(), "stopped", decision=decided)
        if self.left > 0:
            self.left -= 1
            self.last = np.append(q[:-1] - 0.05, 1.0)
            return GateTick(self.last.copy(), "operator", decision=decided)
        if self.queue:
            self.last = self.queue.pop(0)
            return GateTick(self.last.copy(), "policy", decision=decided)
        return GateTick(self.last.copy(), "hold", decision=decided)


# ------------------------------------------------------------------ a LeRobot robot without hardware

MOTORS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


@RobotConfig.register_subclass("fake_so101_for_tests")
@dataclass
class FakeSO101Config(RobotConfig):
    max_relative_target: float | None = None
    camera_shape: tuple[int, int] = (120, 160)


class FakeSO101(LeRobotRobot):
    """LeRobot's SO-101 follower interface (degrees, gripper 0..100, cameras by name) on a motor dict."""

    config_class = FakeSO101Config
    name = "fake_so101"

    def __init__(self, config: FakeSO101Config) -> None:
        super().__init__(config)
        self.config = config
        self.present = {m: 0.0 for m in MOTORS}
        self.present["gripper"] = 50.0
        self.connected = False
        self.fail_next_read = False
        self.writes: list[dict[str, float]] = []

    @cached_property
    def observation_features(self) -> dict:
        h, w = self.config.camera_shape
        return {**{f"{m}.pos": float for m in MOTORS}, "front": (h, w, 3), "wrist": (h, w, 3)}

    @cached_property
    def action_features(self) -> dict:
        return {f"{m}.pos": float for m in MOTORS}

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self, calibrate: bool = True) -> None:
        self.connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict:
        if not self.connected:
            raise ConnectionError("FakeSO101 is not connected")
        if self.fail_next_read:
            self.fail_next_read = False
            raise ConnectionError("[TxRxResult] There is no status packet!")
        h, w = self.config.camera_shape
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : w // 2] = 255
        return {**{f"{m}.pos": v for m, v in self.present.items()}, "front": img, "wrist": img.copy()}

    def send_action(self, action: dict) -> dict:
        goal = {k.removesuffix(".pos"): v for k, v in action.items()}
        if self.config.max_relative_target is not None:
            pairs = {k: (g, self.present[k]) for k, g in goal.items()}
            goal = ensure_safe_goal_position(pairs, self.config.max_relative_target)
        self.present.update(goal)
        self.writes.append(dict(goal))
        return {f"{k}.pos": v for k, v in goal.items()}

    def disconnect(self) -> None:
        self.connected = False
