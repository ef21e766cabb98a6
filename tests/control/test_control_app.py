"""The control app: episodes of a stand-in policy through the real gate in the simulator, the timing
table, the kinematic twin that lets the gate check a LeRobot robot, and config validation."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

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
from vla.supervision.control_app import register_configs as register_control
from vla.supervision.control_loop import ControlConfig, ControlLoop
from vla.supervision.dagger import register_configs as register_finetune
from vla.supervision.dagger import to_finetune_config
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
                           control=ControlConfig(hz=20.0, max_steps=12, execute_steps=3), episodes=2,
                           torch_threads=1)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        reports = run_control(cfg, policy=CreepPolicy(), progress=False)
        # Inference ran on one thread; a fine-tune that follows in this process gets its threads back.
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads_before)
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
    # The gate held the policy back: clamped it, or rejected chunks it could not make safe in one tick.
    assert sum(gate.stats.clamps.values()) + gate.stats.rejections > 0


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


ROOT = Path(__file__).resolve().parents[2]


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(name, overrides=overrides)


def test_control_yaml_composes_the_documented_command():
    register_control()
    cfg = to_control_config(compose("control", ["checkpoint=ckpt", "env=pick_place", "gate=simulated", "episodes=5",
                                                "control.hz=10", "control.async_inference=true",
                                                "record.root=/tmp/takeovers"]))
    assert (cfg.env.task, cfg.gate.operator.kind, cfg.episodes) == ("pick_place", "simulated", 5)
    assert cfg.control.hz == 10 and cfg.control.async_inference and cfg.control.realtime
    assert cfg.record.root == "/tmp/takeovers" and cfg.record.keep == "interventions"
    blocking = to_control_config(compose("control", ["checkpoint=ckpt", "control=blocking", "control.hz=20",
                                                     "record.root=null"]))
    assert not blocking.control.async_inference and blocking.control.realtime and blocking.control.hz == 20
    lockstep = to_control_config(compose("control", ["checkpoint=ckpt", "control=lockstep", "record.root=null"]))
    assert not lockstep.control.realtime


def test_finetune_yaml_composes():
    register_finetune()
    cfg = to_finetune_config(compose("finetune", ["checkpoint=ckpt", "interventions=/tmp/i", "train.steps=7"]))
    assert cfg.gate.operator.kind == "simulated" and cfg.demos == "data/pick_place"
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(1e-4) and not cfg.control.realtime


def test_control_script_end_to_end(tmp_path):
    """The documented command on a small checkpoint: progress, then the table with the timing figures."""
    from vla.eval.rollout import env_feature_spec
    from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
    from vla.policy import VLAPolicy
    from vla.tokenizer import build_vocab
    from vla.train.checkpoint import save_checkpoint

    env = make_env(EnvConfig(task="pick_cube", image_size=16))
    spec = env_feature_spec(env)
    env.close()
    cfg = PolicyConfig(backbone=BackboneConfig(d_model=16, n_layers=1, n_heads=2, stem_channels=[4], patch_size=2,
                                               patch_stride=2, d_vision=16, vision_layers=1, vision_heads=2),
                       head=HeadConfig(chunk_size=4, n_action_steps=2, n_layers=1, n_heads=2))
    stats = {k: {"mean": torch.zeros(7), "std": torch.ones(7) * 0.1, "min": -torch.ones(7), "max": torch.ones(7)}
             for k in ("observation.state", "action")}
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "run", 0, VLAPolicy(cfg, spec, build_vocab(["pick up the red cube"]), stats),
                           config_yaml="{}", stats=stats)
    cmd = [sys.executable, str(ROOT / "scripts" / "control.py"), f"checkpoint={ckpt}", "env=pick_cube",
           "env.image_size=16", "env.max_steps=8", "gate=simulated", "episodes=2", "control.hz=20",
           "control.async_inference=true", f"record.root={tmp_path / 'rec'}", "record.keep=all",
           f"hydra.run.dir={tmp_path / 'out'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for figure in ("steps", "achieved rate", "deadline misses", "inference latency median / p99", "interventions",
                   "success"):
        assert figure in out
    assert "16 " in out.split("steps", 1)[1].split("\n", 1)[0]  # 2 episodes x 8 steps
    assert (tmp_path / "rec" / "meta" / "info.json").is_file()
