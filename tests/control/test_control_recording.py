"""Supervised episodes in the simulator under the real gate and simulated operator, recorded into a
LeRobotDataset whose per-frame intervention flags are read back by lerobot in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from envs.config import EnvConfig, make_env
from vla.supervision.config import GateConfig, OperatorConfig, SimulatedOperatorConfig
from vla.supervision.control_loop import ControlConfig, ControlLoop
from vla.supervision.gate import SupervisionGate
from vla.supervision.intervention_recorder import InterventionRecorder, read_intervention_flags
from vla.supervision.operators import build_operator
from vla.supervision.robot import SimRobot
from vla.types import STATE_KEY

HORIZON = 6


def stuck_policy(obs):
    """Holds still with the gripper open: makes no progress, so the simulated operator steps in."""
    q = np.asarray(obs[STATE_KEY], dtype=np.float64)
    chunk = np.repeat(q[None], HORIZON, axis=0)
    chunk[:, -1] = 0.0
    return chunk


class SpyRecorder(InterventionRecorder):
    """Remembers every flag it was given, to compare with what lerobot reads back."""

    def begin_episode(self, task: str) -> None:
        self.flags: list[bool] = []
        super().begin_episode(task)

    def add_frame(self, observation, action, intervention: bool) -> None:
        self.flags.append(bool(intervention))
        super().add_frame(observation, action, intervention)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("interventions") / "ds"
    env = make_env(EnvConfig(task="pick_cube", image_size=24))
    robot = SimRobot(env)
    # handback=never: the stuck policy would drop the cube again; the person finishes the task instead.
    sim_cfg = SimulatedOperatorConfig(no_progress_ticks=8, reaction_delay=2, max_takeover_fraction=1.0,
                                      handback="never")
    cfg = GateConfig(operator=OperatorConfig(kind="simulated", simulated=sim_cfg))
    gate = SupervisionGate(cfg, env, build_operator(cfg.operator), risk_kind="none", n_action_steps=3)
    rec = SpyRecorder(root, "local/interventions", fps=10, cameras=robot.cameras, image_size=24,
                      state_names=robot.state_names, action_names=robot.action_names, robot_type="arm6",
                      keep="all")
    loop = ControlLoop(robot, stuck_policy, ControlConfig(hz=10.0, realtime=False), gate=gate, recorder=rec)
    reports, flags = [], []
    try:
        for seed in (3, 4):
            reports.append(loop.run_episode(seed=seed))
            flags.append(list(rec.flags))
    finally:
        loop.close()
        rec.close()
        env.close()
    return root, reports, flags, gate


def test_the_simulated_operator_takes_over_a_stuck_policy(recorded):
    _, reports, flags, gate = recorded
    for rep, f in zip(reports, flags, strict=True):
        assert rep.takeovers >= 1 and rep.actors["operator"] == sum(f) > 0
        assert rep.actors["policy"] > 0 and f[0] is False  # the policy drives first
        assert f[-1] is True and rep.success  # the person (the scripted expert) finishes the task
    assert gate.stats.takeovers == reports[-1].takeovers  # the gate's own count agrees with the loop's


def test_intervention_flags_round_trip_through_lerobot_in_a_fresh_process(recorded):
    root, reports, flags, _ = recorded
    script = textwrap.dedent(f"""
        import json, os
        os.environ["HF_HUB_OFFLINE"] = "1"
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
        ds = LeRobotDataset("local/interventions", root={str(root)!r}, video_backend="pyav")
        out = {{}}
        for i in range(len(ds)):
            item = ds[i]
            out.setdefault(int(item["episode_index"]), []).append(bool(item["intervention"].item()))
        print(json.dumps({{"episodes": ds.meta.total_episodes, "flags": out,
                          "dtype": ds.meta.features["intervention"]["dtype"],
                          "fields": sorted(ds.meta.features)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["episodes"] == 2 and got["dtype"] == "bool"
    assert {"observation.images.front", "observation.images.wrist", "observation.state", "action",
            "intervention"} <= set(got["fields"])
    assert [got["flags"][str(i)] for i in range(2)] == flags
    assert [len(f) for f in flags] == [r.steps for r in reports]
    # The light reader used for fine-tuning agrees with lerobot's.
    light = read_intervention_flags(root)
    assert [light[i].tolist() for i in range(2)] == flags


def test_only_episodes_with_interventions_are_kept_by_default(tmp_path):
    rec = InterventionRecorder(tmp_path / "ds", "local/x", fps=10, cameras=["front"], image_size=16,
                               state_names=["a", "gripper"], action_names=["a.target", "gripper"],
                               robot_type="arm6")
    img = {"observation.images.front": np.zeros((16, 16, 3), np.uint8), STATE_KEY: np.zeros(2, np.float32)}
    rec.begin_episode("t")
    for _ in range(3):
        rec.add_frame(img, np.zeros(2), intervention=False)
    assert not rec.end_episode().kept
    rec.begin_episode("t")
    for k in range(3):
        rec.add_frame(img, np.zeros(2), intervention=k == 1)
    out = rec.end_episode()
    rec.close()
    assert out.kept and out.interventions == 1 and rec.num_episodes == 1
    assert read_intervention_flags(tmp_path / "ds")[0].tolist() == [False, True, False]
    with pytest.raises(ValueError, match=r"record\.keep"):
        InterventionRecorder(tmp_path / "other", "local/y", 10, ["front"], 16, ["a"], ["a"], "arm6", keep="some")


def test_terminal_emergency_stop_key_stops_the_loop_safely():
    """A person at a (pseudo-)terminal presses space while the policy drives: safe stop, run over."""
    import os
    import select
    import threading

    from vla.supervision.config import TerminalOperatorConfig
    from vla.supervision.terminal import TerminalOperator

    master, slave = os.openpty()
    env = make_env(EnvConfig(task="pick_cube", image_size=16, cameras=["front"]))
    robot = SimRobot(env)
    stops = []
    robot_stop = robot.stop
    robot.stop = lambda: (stops.append(True), robot_stop())[1]
    operator = TerminalOperator(TerminalOperatorConfig(tick_wait_s=0.0), fd_in=slave, fd_out=slave)
    gate = SupervisionGate(GateConfig(escalate="never"), env, operator, risk_kind="none", n_action_steps=3)
    loop = ControlLoop(robot, stuck_policy, ControlConfig(hz=20.0), gate=gate)
    timer = threading.Timer(0.5, lambda: os.write(master, b" "))
    timer.start()
    try:
        rep = loop.run_episode(seed=0, max_steps=400)
    finally:
        timer.cancel()
        loop.close()
        operator.close()
        env.close()
        out = b""
        while True:
            # Linux hands pty output to the master side asynchronously: allow it a moment to arrive.
            if not select.select([master], [], [], 0.5)[0]:
                break
            out += os.read(master, 4096)
        os.close(master)
        os.close(slave)
    assert rep.stop_reason == "estop" and stops == [True]
    assert 1 <= rep.steps < 400 and gate.stats.aborted
    assert b"EMERGENCY STOP" in out
