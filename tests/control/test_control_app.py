"""The control app: episodes of a stand-in policy through the real gate in the simulator, the timing
table, the kinematic twin that lets the gate check a LeRobot robot, and config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from control_helpers import FakeSO101, FakeSO101Config

from envs.config import EnvConfig, make_env
from envs.robots import get_robot
from vla.supervision.config import GateConfig, OperatorConfig
from vla.supervision.control_app import (
    ControlAppConfig,
    RobotConfig,
    TwinSyncedGate,
    control_table,
    run_control,
    to_control_config,
)
from vla.supervision.control_loop import ControlConfig, ControlLoop
from vla.supervision.gate import SupervisionGate
from vla.supervision.operators import AutoOperator
from vla.supervision.robot import LeRobotRobotAdapter, so101_calibration
from vla.types import STATE_KEY


class CreepPolicy:
    """A policy object (predict_chunk + reset): creeps the first joint, keeps the gripper open."""

    def __init__(self, step: float = 0.02, horizon: int = 6) -> None:
        self.step, self.horizon = step, horizon
        self.cfg = None

    def predict_chunk(self, batch, **kw):
        q = torch.as_tensor(batch[STATE_KEY])[0].double()
        chunk = q.repeat(self.horizon, 1)
        chunk[:, 0] += self.step * torch.arange(1, self.horizon + 1)
        chunk[:, -1] = 0.0
        return chunk[None]

    def reset(self) -> None:
        pass


def test_run_control_in_the_simulator_under_the_gate():
    cfg = ControlAppConfig(checkpoint="unused", env=EnvConfig(task="pick_cube", image_size=16),
                           control=ControlConfig(hz=20.0, max_steps=12, execute_steps=3), episodes=2)
    reports = run_control(cfg, policy=CreepPolicy(), progress=False)
    assert [r.steps for r in reports] == [12, 12] and all(r.stop_reason == "max_steps" for r in reports)
    assert all(r.actors["policy"] >= 10 for r in reports)
    table = control_table(cfg, reports)
    for key in ("steps", "achieved rate", "deadline misses", "inference latency median / p99", "interventions",
                "success"):
        assert key in table
    assert table["steps"] == 24 and table["success"].startswith("0/2")


def test_twin_lets_the_gate_check_a_lerobot_robot(tmp_path):
    fake = FakeSO101(FakeSO101Config(id="twin", calibration_dir=tmp_path))
    adapter = LeRobotRobotAdapter(fake, so101_calibration(), image_size=16)
    adapter.connect()
    home = get_robot("so101").home_qpos  # a pose above the table, as the arm would rest before a run
    fake.present.update({m: math.degrees(q) for m, q in zip(so101_calibration().state_names[:5], home, strict=False)})
    fake.present["elbow_flex"] = 30.0
    env = make_env(EnvConfig(task="pick_cube", robot="so101", image_size=16, cameras=["front"]))
    gate = TwinSyncedGate(SupervisionGate(GateConfig(), env, AutoOperator(), risk_kind="none", n_action_steps=3),
                          env)
    gate.sync(adapter.read()[STATE_KEY].astype(np.float64))
    assert env.arm_qpos()[2] == pytest.approx(math.radians(30.0), abs=1e-6)  # the twin follows the arm
    # A policy that jumps 1.5 rad per tick on the shoulder: the gate's joint-speed limit (10 rad/s at
    # the twin's 10 Hz: 1 rad per tick) and the joint limit (1.92 rad) must hold it back.
    loop = ControlLoop(adapter, CreepPolicyPredictor(1.5), ControlConfig(hz=50.0), gate=gate)
    try:
        rep = loop.run_episode(max_steps=6)
    finally:
        loop.close()
        env.close()
    pans = [w["shoulder_pan"] for w in fake.writes]
    assert rep.steps == 6 and max(pans) <= math.degrees(1.92) + 1e-6
    assert max(abs(b - a) for a, b in zip([0.0, *pans], pans, strict=False)) <= math.degrees(1.0) + 1e-6
    assert sum(gate.stats.clamps.values()) > 0


def CreepPolicyPredictor(step: float):
    policy = CreepPolicy(step)

    def predict(obs):
        batch = {STATE_KEY: torch.as_tensor(np.asarray(obs[STATE_KEY], np.float32))[None]}
        return policy.predict_chunk(batch)[0].numpy()

    return predict


def test_config_validation_names_the_fix():
    with pytest.raises(ValueError, match=r"robot\.kind"):
        RobotConfig(kind="ur5")
    with pytest.raises(ValueError, match="gate=auto or gate=terminal"):
        ControlAppConfig(checkpoint="x", robot=RobotConfig(kind="so101"),
                         gate=GateConfig(operator=OperatorConfig(kind="simulated")))
    cfg = to_control_config({"checkpoint": "ckpt", "control": {"hz": 20, "async_inference": False}})
    assert cfg.control.hz == 20 and not cfg.control.async_inference
    with pytest.raises(Exception, match="hz"):
        to_control_config({"checkpoint": "ckpt", "control": {"hz": "fast"}})
