"""``scripts/control.py``: a checkpoint driving a robot through the control loop under the gate.

The embedded default is the simulated robot (``robot.kind=sim``): the env of ``env`` with the gate's
safety filter and operators reading its MuJoCo state. ``robot.kind=so101`` drives a LeRobot SO-101
follower through :class:`~vla.supervision.robot.LeRobotRobotAdapter`; the gate then checks every
action against a kinematic twin (the simulated SO-101, its joints set to the measured ones each
tick), and the simulated operator is not available (it watches the simulated scene).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from envs.config import EnvConfig, make_env
from envs.tabletop import TabletopEnv
from vla.data.recorder import existing_episodes
from vla.supervision.config import GateConfig
from vla.supervision.control_loop import ControlConfig, ControlLoop, EpisodeReport, summarize
from vla.supervision.inference import policy_predictor
from vla.supervision.intervention_recorder import KEEP_MODES, InterventionRecorder
from vla.supervision.robot import LeRobotRobotAdapter, Robot, SimRobot, so101_calibration
from vla.types import STATE_KEY

log = logging.getLogger(__name__)
ROBOT_KINDS = ("sim", "so101")


@dataclass
class RobotConfig:
    kind: str = "sim"  # sim | so101
    port: str = "/dev/ttyACM0"  # so101: the follower's serial port
    id: str = "follower"  # so101: LeRobot calibration id
    # so101: policy camera -> {index_or_path, width, height, fps} (OpenCV cameras)
    cameras: dict[str, Any] = field(default_factory=dict)
    max_relative_target: float | None = None  # so101: LeRobot's own per-command cap (degrees)
    task: str = ""  # so101: the instruction given to the policy

    def __post_init__(self) -> None:
        if self.kind not in ROBOT_KINDS:
            raise ValueError(f"robot.kind={self.kind!r} is not supported; choose from {list(ROBOT_KINDS)}")


@dataclass
class RecordConfig:
    root: str | None = None  # LeRobotDataset root for supervised episodes (conf: the run folder); null: none
    repo_id: str = "local/interventions"
    keep: str = "interventions"  # interventions: episodes with a takeover | all

    def __post_init__(self) -> None:
        if self.keep not in KEEP_MODES:
            raise ValueError(f"record.keep={self.keep!r} is unknown; choose from {list(KEEP_MODES)}")


@dataclass
class ControlAppConfig:
    checkpoint: str = MISSING
    env: EnvConfig = field(default_factory=EnvConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    episodes: int = 5
    seed_start: int = 100_000  # demos are collected from seed 0 up: keep these disjoint
    device: str = "cpu"
    torch_threads: int = 1  # intra-op threads for inference; the other core runs the control thread

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.seed_start < 0 or self.torch_threads < 1:
            raise ValueError(f"need episodes >= 1, seed_start >= 0, torch_threads >= 1; got {self.episodes}, "
                             f"{self.seed_start}, {self.torch_threads}")
        if self.robot.kind != "sim" and self.gate.operator.kind == "simulated":
            raise ValueError("gate=simulated watches the simulated scene; with robot.kind="
                             f"{self.robot.kind} use gate=auto or gate=terminal")


def register_configs() -> None:
    ConfigStore.instance().store(name="control_schema", node=ControlAppConfig)


def to_control_config(cfg: DictConfig | dict[str, Any]) -> ControlAppConfig:
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ControlAppConfig), node))  # type: ignore[return-value]


class TwinSyncedGate:
    """A gate whose env is a kinematic twin of a real robot: its joints follow each measured state."""

    def __init__(self, gate: Any, env: TabletopEnv) -> None:
        from envs.robots import PREFIX

        self.gate, self.env = gate, env
        self.n_action_steps = getattr(gate, "n_action_steps", None)
        r, m = env.robot, env.model
        self._arm = np.array([m.joint(PREFIX + j).qposadr[0] for j in r.arm_joints])
        self._grip = np.array([m.joint(PREFIX + j).qposadr[0] for j in r.gripper_joints])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gate, name)

    def sync(self, state: np.ndarray) -> None:
        import mujoco

        env, r = self.env, self.env.robot
        env.data.qpos[self._arm] = state[: r.n_arm]
        env.data.qpos[self._grip] = r.gripper_open_qpos + float(state[-1]) * (r.gripper_closed_qpos
                                                                             - r.gripper_open_qpos)
        mujoco.mj_forward(env.model, env.data)

    def reset(self) -> None:
        self.gate.reset()

    def tick(self, obs: Any, propose: Any) -> Any:
        self.sync(np.asarray(obs[STATE_KEY], dtype=np.float64))
        return self.gate.tick(obs, propose)


def _lerobot_robot(cfg: ControlAppConfig) -> Robot:
    from lerobot.cameras.opencv import OpenCVCameraConfig
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    cams = {name: OpenCVCameraConfig(**dict(spec)) for name, spec in cfg.robot.cameras.items()}
    try:
        follower = SO101Follower(SO101FollowerConfig(port=cfg.robot.port, id=cfg.robot.id, cameras=cams,
                                                     max_relative_target=cfg.robot.max_relative_target))
    except ImportError as exc:  # the motor bus SDK is an optional lerobot extra
        raise ImportError(f"robot.kind=so101 needs LeRobot's Feetech motor support: pip install "
                          f"'lerobot[feetech]==0.6.1' ({exc})") from exc
    cal = so101_calibration({name: name for name in cams})
    return LeRobotRobotAdapter(follower, cal, image_size=cfg.env.image_size, task=cfg.robot.task)


@dataclass
class ControlSession:
    loop: ControlLoop
    robot: Robot
    env: TabletopEnv
    recorder: InterventionRecorder | None
    # torch's intra-op thread count before the session narrowed it for inference; close() puts it back so a
    # caller that trains afterwards in the same process (scripts/finetune.py) does not train on one core.
    torch_threads_before: int

    def close(self) -> None:
        import torch

        torch.set_num_threads(self.torch_threads_before)
        self.loop.close()
        if self.recorder is not None:
            self.recorder.close()
        operator = getattr(getattr(self.loop.gate, "operator", None), "close", None)
        if callable(operator):
            operator()
        self.robot.disconnect()
        self.env.close()


def build_session(cfg: ControlAppConfig, policy: Any | None = None) -> ControlSession:
    """Robot, policy, gate, recorder and loop from the config (``policy`` overrides the checkpoint)."""
    import torch

    from vla.eval.rollout import build_policy, policy_n_action_steps, resolve_device
    from vla.supervision.gate import SupervisionGate
    from vla.supervision.operators import build_operator
    from vla.supervision.risk import resolve_risk_kind

    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    env_cfg = cfg.env if cfg.robot.kind == "sim" else EnvConfig(**{**vars(cfg.env), "robot": "so101"})
    env = make_env(env_cfg)
    try:
        policy = policy if policy is not None else build_policy(cfg.checkpoint, env, resolve_device(cfg.device))
        operator = build_operator(cfg.gate.operator)
        risk_kind = resolve_risk_kind(cfg.gate.risk.kind, policy)
        gate: Any = SupervisionGate(cfg.gate, env, operator, risk_kind=risk_kind,
                                    n_action_steps=policy_n_action_steps(policy) or cfg.control.execute_steps)
        robot: Robot = SimRobot(env) if cfg.robot.kind == "sim" else _lerobot_robot(cfg)
        if cfg.robot.kind != "sim":
            gate = TwinSyncedGate(gate, env)
            robot.connect()
        recorder = None
        if cfg.record.root:
            recorder = InterventionRecorder(cfg.record.root, cfg.record.repo_id, fps=round(env.control_hz),
                                            cameras=robot.cameras, image_size=cfg.env.image_size,
                                            state_names=robot.state_names, action_names=robot.action_names,
                                            robot_type=env.robot.name, keep=cfg.record.keep)
        n_samples = gate.risk.n_samples if hasattr(gate, "risk") else 1
        loop = ControlLoop(robot, policy_predictor(policy, n_samples), cfg.control, gate=gate, recorder=recorder)
    except BaseException:
        env.close()
        torch.set_num_threads(threads_before)
        raise
    if cfg.robot.kind == "sim" and abs(cfg.control.hz - env.control_hz) > 1e-9:
        log.info("control.hz=%g but the simulator advances %g s per tick (env.control_hz=%g): simulated time "
                 "runs %.2fx the wall clock", cfg.control.hz, 1 / env.control_hz, env.control_hz,
                 cfg.control.hz / env.control_hz)
    return ControlSession(loop, robot, env, recorder, threads_before)


@contextmanager
def estop_on_sigint(loop: ControlLoop) -> Iterator[None]:
    """First Ctrl-C: emergency stop (safe stop, then the run ends); a second one interrupts at once."""
    fired = {"n": 0}

    def handler(signum: int, frame: Any) -> None:
        fired["n"] += 1
        if fired["n"] > 1:
            raise KeyboardInterrupt
        log.warning("emergency stop requested (Ctrl-C); press again to interrupt immediately")
        loop.estop()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_control(cfg: ControlAppConfig, policy: Any | None = None, progress: bool = True) -> list[EpisodeReport]:
    """Run ``cfg.episodes`` episodes (seeds from ``cfg.seed_start``); stops early after an e-stop."""
    from tqdm import tqdm

    session = build_session(cfg, policy)
    reports: list[EpisodeReport] = []
    try:
        with estop_on_sigint(session.loop), tqdm(total=cfg.episodes, desc="control", unit="ep",
                                                  disable=not progress) as bar:
            for i in range(cfg.episodes):
                rep = session.loop.run_episode(seed=cfg.seed_start + i)
                reports.append(rep)
                s = summarize(reports)
                bar.update(1)
                bar.set_postfix(success=f"{s['success_rate']:.0%}", hz=f"{s['achieved_hz']:.1f}",
                                misses=f"{s['deadline_miss_pct']:.1f}%", interventions=s["interventions"])
                if rep.stop_reason == "estop":
                    break
    finally:
        session.close()
    return reports


def control_table(cfg: ControlAppConfig, reports: list[EpisodeReport]) -> dict[str, Any]:
    s = summarize(reports)
    return {
        "episodes": s["episodes"],
        "steps": s["steps"],
        "target rate": f"{cfg.control.hz:g} Hz ({'async' if cfg.control.async_inference else 'blocking'} inference)",
        "achieved rate": f"{s['achieved_hz']:.2f} Hz",
        "deadline misses": f"{s['deadline_misses']} ({s['deadline_miss_pct']:.2f}%)",
        "tick work p99": f"{s['tick_work_p99_ms']:.1f} ms",
        "inference latency median / p99": f"{s['latency_median_ms']:.1f} / {s['latency_p99_ms']:.1f} ms",
        "interventions": f"{s['interventions']} ({s['interventions_per_episode']:.2f} per episode)",
        "autonomy": f"{100 * s['autonomy']:.1f}% of steps",
        "success": f"{s['success']}/{s['episodes']} ({100 * s['success_rate']:.0f}%)",
        "faults": ", ".join(f"{k} x{v}" for k, v in sorted(s["faults"].items())) or "none",
        "stops": ", ".join(f"{k} x{v}" for k, v in sorted(s["stop_reasons"].items())),
        "recorded": (f"{existing_episodes(Path(cfg.record.root))} episodes in {cfg.record.root}"
                     if cfg.record.root else "off"),
    }
