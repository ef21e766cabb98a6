"""Typed configuration of the supervision gate (the Hydra ``gate`` group) and of the eval app.

``conf/gate/{auto,simulated,terminal}.yaml`` map onto :class:`GateConfig`; ``conf/eval.yaml`` onto
:class:`EvalAppConfig`. :func:`register_configs` puts the schema in Hydra's ConfigStore, so a wrong
type or an unknown key fails at start-up naming the key; the ``__post_init__`` checks run when the
config becomes objects and say how to fix a bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from envs.config import EnvConfig
from vla.config import LoggerConfig

OPERATOR_KINDS = ("auto", "simulated", "terminal")
RISK_KINDS = ("auto", "samples", "consistency", "none")
ESCALATIONS = ("risk", "always", "never")
HANDBACKS = ("recovered", "never")
TIMEOUT_DECISIONS = ("approve", "veto", "abort")
# Scene triggers of the simulated operator (see vla/supervision/operators.py for their definitions).
TRIGGERS = ("no_progress", "dropped", "knocked_away", "empty_grasp", "time_running_out")


def _check_nonneg(where: str, **values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{where}.{name} must be >= 0, got {value}")


def _check_choice(where: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{where}={value!r} is not supported; choose one of {list(options)}")


@dataclass
class SafetyConfig:
    """Hard limits every action passes before it reaches the robot (vla/supervision/safety.py)."""

    # Largest change of any joint target per control tick, as a speed (rad/s) so it does not depend on
    # the control rate. The scripted expert's fastest move is the flange roll aligning the grasp yaw
    # (8.4 rad/s at 10 Hz); 10 rad/s lets it through and still stops wild jumps of a broken policy.
    max_joint_speed: float = 10.0
    joint_margin: float = 0.0  # rad kept free inside each joint limit
    # End-effector workspace box in world coordinates. Unset: the robot's reach region grown by
    # ``workspace_margin`` in x and y, and from the table up to ``workspace_height``.
    workspace_low: list[float] | None = None
    workspace_high: list[float] | None = None
    workspace_margin: float = 0.15
    workspace_height: float = 0.40
    # The end-effector target and (with check_fingertips) the lowest point of every colliding finger
    # geom must stay this far above the table surface.
    table_clearance: float = 0.0
    check_fingertips: bool = True

    def __post_init__(self) -> None:
        _check_nonneg("gate.safety", joint_margin=self.joint_margin, workspace_margin=self.workspace_margin)
        if self.max_joint_speed <= 0:
            raise ValueError(f"gate.safety.max_joint_speed must be > 0 rad/s, got {self.max_joint_speed}")
        if self.workspace_height <= 0:
            raise ValueError(f"gate.safety.workspace_height must be > 0 m, got {self.workspace_height}")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ValueError("set both gate.safety.workspace_low and gate.safety.workspace_high ([x, y, z] "
                             "world bounds in metres) or neither (derived from the robot's reach region)")
        if self.workspace_low is not None and self.workspace_high is not None:
            low, high = list(self.workspace_low), list(self.workspace_high)
            if len(low) != 3 or len(high) != 3 or any(lo >= hi for lo, hi in zip(low, high, strict=True)):
                raise ValueError(f"gate.safety.workspace_low/high must be [x, y, z] with low < high, got "
                                 f"{low} and {high}")


@dataclass
class RiskConfig:
    """Soft risk score computed from the policy itself (vla/supervision/risk.py).

    ``kind``: ``samples`` = disagreement between ``n_samples`` chunks drawn from a stochastic (flow)
    head; ``consistency`` = disagreement between consecutive overlapping chunks (any head);
    ``auto`` = samples for stochastic policies, consistency otherwise; ``none`` = no risk score.
    Scores are in radians: mean over the compared steps of the largest arm-joint disagreement, plus
    ``gripper_weight`` times the mean gripper disagreement (gripper in 0..1).
    """

    kind: str = "auto"
    n_samples: int = 4
    sample_threshold: float = 0.10
    consistency_threshold: float = 0.20
    gripper_weight: float = 0.5

    def __post_init__(self) -> None:
        _check_choice("gate.risk.kind", self.kind, RISK_KINDS)
        if self.n_samples < 2:
            raise ValueError(f"gate.risk.n_samples must be >= 2 to measure disagreement, got {self.n_samples}")
        _check_nonneg("gate.risk", sample_threshold=self.sample_threshold,
                      consistency_threshold=self.consistency_threshold, gripper_weight=self.gripper_weight)

    def threshold(self, kind: str) -> float:
        return {"samples": self.sample_threshold, "consistency": self.consistency_threshold}.get(kind, float("inf"))


@dataclass
class SimulatedOperatorConfig:
    """A simulated person backed by the scripted expert; every tick count is in control ticks."""

    reaction_delay: int = 3  # a scene trigger must hold this long before the person steps in
    max_takeovers: int = 3  # attention budget per episode (-1: unlimited)
    max_takeover_fraction: float = 0.5  # ... and at most this share of the episode's max steps driven
    max_vetoes: int = 2  # consecutive vetoes of high-risk chunks before taking over instead
    triggers: list[str] = field(default_factory=lambda: list(TRIGGERS))
    no_progress_ticks: int = 20  # no_progress: the task potential has not improved for this long
    progress_eps: float = 0.005  # metres of potential that count as progress
    drop_height: float = 0.01  # dropped: let go of the cube after lifting it at least this high
    knock_distance: float = 0.03  # knocked_away: cube pushed this far (m) while not held
    empty_grasp_ticks: int = 8  # empty_grasp: gripper closed but the cube not held for this long
    empty_grasp_state: float = 0.3  # measured gripper state (0 open .. 1 closed) that counts as closed
    # time_running_out: the expert's remaining-time estimate is distance over speed times time_factor
    # (its slow descent and re-alignment make it about 2x slower than the straight-line estimate,
    # measured on its own episodes), plus time_margin ticks.
    time_factor: float = 2.0
    time_margin: int = 5
    min_takeover_ticks: int = 5  # drive at least this long before handing back
    handback: str = "recovered"  # recovered: hand back once the task moved a stage on; never: finish
    handback_lift: float = 0.02  # metres the cube must be lifted for the grasp stage to count

    def __post_init__(self) -> None:
        _check_nonneg("gate.operator.simulated", reaction_delay=self.reaction_delay, max_vetoes=self.max_vetoes,
                      progress_eps=self.progress_eps, drop_height=self.drop_height,
                      knock_distance=self.knock_distance, time_margin=self.time_margin,
                      min_takeover_ticks=self.min_takeover_ticks, handback_lift=self.handback_lift,
                      time_factor=self.time_factor)
        if self.max_takeovers < -1:
            raise ValueError(f"gate.operator.simulated.max_takeovers must be -1 (unlimited) or >= 0, "
                             f"got {self.max_takeovers}")
        if not 0.0 <= self.max_takeover_fraction <= 1.0:
            raise ValueError(f"gate.operator.simulated.max_takeover_fraction must be in [0, 1], "
                             f"got {self.max_takeover_fraction}")
        for name in ("no_progress_ticks", "empty_grasp_ticks"):
            if getattr(self, name) < 1:
                raise ValueError(f"gate.operator.simulated.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.empty_grasp_state <= 1.0:
            raise ValueError(f"gate.operator.simulated.empty_grasp_state must be in (0, 1], "
                             f"got {self.empty_grasp_state}")
        unknown = [t for t in self.triggers if t not in TRIGGERS]
        if unknown:
            raise ValueError(f"gate.operator.simulated.triggers has unknown trigger(s) {unknown}; "
                             f"choose from {list(TRIGGERS)}")
        _check_choice("gate.operator.simulated.handback", self.handback, HANDBACKS)


@dataclass
class TerminalOperatorConfig:
    """A person at the keyboard (works over SSH, no X server); keys in vla/supervision/terminal.py."""

    jog_step: float = 0.01  # metres the end effector moves per jog key press
    tick_wait_s: float = 0.1  # while you drive, each control tick waits this long for a key
    review_timeout_s: float = 0.0  # 0: wait for an answer; > 0: apply timeout_decision after this long
    timeout_decision: str = "veto"

    def __post_init__(self) -> None:
        if self.jog_step <= 0:
            raise ValueError(f"gate.operator.terminal.jog_step must be > 0 m, got {self.jog_step}")
        _check_nonneg("gate.operator.terminal", tick_wait_s=self.tick_wait_s,
                      review_timeout_s=self.review_timeout_s)
        _check_choice("gate.operator.terminal.timeout_decision", self.timeout_decision, TIMEOUT_DECISIONS)


@dataclass
class OperatorConfig:
    kind: str = "auto"  # auto | simulated | terminal
    simulated: SimulatedOperatorConfig = field(default_factory=SimulatedOperatorConfig)
    terminal: TerminalOperatorConfig = field(default_factory=TerminalOperatorConfig)

    def __post_init__(self) -> None:
        _check_choice("gate.operator.kind", self.kind, OPERATOR_KINDS)


@dataclass
class GateConfig:
    """Safety filter -> risk score -> operator decision, for every proposed chunk.

    ``escalate``: when the operator is asked about a chunk. ``risk``: risk at or above its threshold,
    or the safety filter had to clamp it; ``always``: every chunk; ``never``: the gate approves every
    chunk that passes the safety filter (the operator can still step in on its own).
    ``n_action_steps``: actions executed from each approved chunk (0: the policy's own setting).
    """

    safety: SafetyConfig = field(default_factory=SafetyConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    escalate: str = "risk"
    n_action_steps: int = 0

    def __post_init__(self) -> None:
        _check_choice("gate.escalate", self.escalate, ESCALATIONS)
        if self.n_action_steps < 0:
            raise ValueError(f"gate.n_action_steps must be >= 0 (0: the policy's own), got {self.n_action_steps}")


@dataclass
class EvalAppConfig:
    """``scripts/eval.py``: evaluate a checkpoint under a gate over seeded episodes."""

    checkpoint: str = MISSING  # checkpoint folder, its ``last`` link, or a training run folder
    env: EnvConfig = field(default_factory=EnvConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(kind="none"))
    episodes: int = 50
    seed_start: int = 100_000  # demos are collected from seed 0 up; evaluation seeds stay disjoint
    workers: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:<i>
    video_episodes: int = 3
    also_auto: bool = False  # also run the same seeds fully autonomously and report both
    out_dir: str = ""  # report folder; empty: Hydra's run folder

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.seed_start < 0 or self.video_episodes < 0:
            raise ValueError(f"seed_start and video_episodes must be >= 0, got {self.seed_start}, "
                             f"{self.video_episodes}")
        if self.gate.operator.kind == "terminal" and self.workers != 1:
            raise ValueError("gate=terminal needs workers=1: one person answers at one keyboard")


def register_configs() -> None:
    """Register the eval schema in Hydra's ConfigStore; idempotent."""
    ConfigStore.instance().store(name="eval_schema", node=EvalAppConfig)


def to_eval_config(cfg: DictConfig | dict[str, Any]) -> EvalAppConfig:
    """Composed Hydra config -> EvalAppConfig (runs every ``__post_init__`` check)."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    merged = OmegaConf.merge(OmegaConf.structured(EvalAppConfig), node)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def gate_config(cfg: GateConfig | DictConfig | dict[str, Any] | None) -> GateConfig:
    """Accept a GateConfig, a (partial) mapping of its fields, or None (defaults: auto operator)."""
    if cfg is None:
        return GateConfig()
    if isinstance(cfg, GateConfig):
        return cfg
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GateConfig), node))  # type: ignore[return-value]
