"""Operators: who answers when the gate escalates, and who drives during a takeover.

An operator is asked three things by :class:`~vla.supervision.gate.SupervisionGate`:

* ``review(proposal, tick)`` when a chunk is escalated: approve / veto (hold, re-query) / take over / abort;
* ``watch(tick)`` every tick while the policy drives: ``None``, or an unprompted take over / abort;
* ``act(tick)`` every tick while it drives: the next action, or hand back / abort.

``auto`` approves everything and never steps in. ``simulated`` is a person backed by the scripted
expert (below). ``terminal`` is a person at the keyboard (vla/supervision/terminal.py).

Simulated operator. It watches the scene (it sees the simulator, as a person sees the table) and
keeps five triggers, each enabled by name in ``triggers``:

* ``no_progress``: the task potential has not improved by ``progress_eps`` for ``no_progress_ticks``.
  The potential is minus the distance still to cover, in metres: hand to cube plus cube to goal while
  the cube is not held, cube to goal (the place, or the lift height) once held, plus 0.1 for holding it;
* ``dropped``: the cube, held and lifted at least ``drop_height``, is no longer held and not at its
  place (stays active until it is held again);
* ``knocked_away``: the cube, not held, is more than ``knock_distance`` from where it last lay or was
  let go;
* ``empty_grasp``: the measured gripper state is at least ``empty_grasp_state`` (closed) but the cube
  is not held, for ``empty_grasp_ticks`` ticks in a row;
* ``time_running_out``: the ticks left are no more than the expert's estimate of the ticks it needs to
  finish from here (straight-line distance over its speed, times ``time_factor``), plus
  ``time_margin`` and the reaction delay.

When any trigger has been active for ``reaction_delay`` ticks in a row and the attention budget allows
(``max_takeovers`` per episode, ``max_takeover_fraction`` of the episode's steps driven), the person
takes over and the expert drives. On an escalated (high-risk) chunk the person takes over at once if a
trigger is active, otherwise vetoes it, up to ``max_vetoes`` in a row, then takes over; with no budget
left it approves, and so it does a chunk escalated without high risk (e.g. for safety clamps only).
The person hands back after at least ``min_takeover_ticks`` once the task has moved a stage past
where it took over (stage 1: cube held and lifted ``handback_lift``; stage 2: held above its place,
for place tasks) and no trigger is active; never after a ``time_running_out`` takeover (it finishes
the task), and at once when the attention budget runs out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.expert import CLOSE_TICKS, ScriptedExpert
from vla.supervision.config import OperatorConfig, SimulatedOperatorConfig
from vla.supervision.risk import RiskScore

if TYPE_CHECKING:
    from envs.tabletop import TabletopEnv

HOLD_BONUS = 0.1  # potential gained by holding the cube, in metres of distance


class Decision(StrEnum):
    APPROVE = "approve"
    VETO = "veto"
    TAKEOVER = "takeover"
    HANDBACK = "handback"
    ABORT = "abort"
    REJECT = "reject"  # the safety filter (or a failing policy) refused a chunk


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str


@dataclass
class Proposal:
    """An escalated chunk as the operator sees it."""

    step: int
    actions: np.ndarray  # (n, A) the filtered actions that would run
    raw: np.ndarray  # (H, A) the chunk as the policy proposed it
    risk: RiskScore
    why: list[str]  # why the gate escalated
    clamps: dict[str, int]  # safety clamps applied to ``actions``, by reason
    ee_targets: np.ndarray  # (n, 3) end-effector target of each action
    vetoes_in_row: int


@dataclass
class TickInfo:
    step: int  # control ticks since the episode started
    max_steps: int
    obs: Mapping[str, Any]
    last_command: np.ndarray  # the action sent on the previous tick


class Operator:
    """Base: approves, never steps in, hands back at once if ever given control."""

    name = "auto"

    def reset(self, env: TabletopEnv) -> None:
        self.env = env

    def review(self, proposal: Proposal, tick: TickInfo) -> Verdict:
        return Verdict(Decision.APPROVE, "auto operator approves every chunk")

    def watch(self, tick: TickInfo) -> Verdict | None:
        return None

    def take_control(self, tick: TickInfo, reason: str) -> None:
        """Called by the gate whenever control passes to this operator."""

    def act(self, tick: TickInfo) -> np.ndarray | Verdict:
        return Verdict(Decision.HANDBACK, "auto operator does not drive")

    def close(self) -> None:
        """Release what the operator holds (e.g. restore the terminal)."""


class AutoOperator(Operator):
    name = "auto"


# ----------------------------------------------------------------------------- scene monitoring
@dataclass
class SceneMonitor:
    """Per-tick task state the simulated person keeps in mind: progress, grasp history, refs."""

    cfg: SimulatedOperatorConfig
    best: float = -np.inf
    last_improve: int = 0
    held_lifted: bool = False  # the cube was held and lifted on the previous tick
    dropped: bool = False
    ref_xy: np.ndarray = field(default_factory=lambda: np.zeros(2))
    empty_ticks: int = 0
    active: list[str] = field(default_factory=list)

    def restart(self, env: TabletopEnv, step: int) -> None:
        """A fresh progress window (episode start, or the policy gets control back)."""
        self.best, self.last_improve = potential(env), step
        goal = env.task.expert_goal(env, env.episode)
        self.ref_xy = env.cube_pos(goal.cube)[:2]
        self.empty_ticks = 0
        self.dropped = False

    def update(self, env: TabletopEnv, step: int, max_steps: int, speed: float, delay: int) -> list[str]:
        cfg = self.cfg
        goal = env.task.expert_goal(env, env.episode)
        cube = env.cube_pos(goal.cube)
        held = env.is_grasped(goal.cube)
        phi = potential(env)
        if phi > self.best + cfg.progress_eps:
            self.best, self.last_improve = phi, step
        lifted = held and cube[2] >= env.cube_half + cfg.drop_height
        if held:
            self.dropped = False
            self.ref_xy = cube[:2]
        elif self.held_lifted and not at_place(env, cube, goal.place):
            self.dropped = True
        self.held_lifted = lifted
        closed = env.gripper_state() >= cfg.empty_grasp_state
        self.empty_ticks = self.empty_ticks + 1 if closed and not held else 0
        checks = {
            "no_progress": step - self.last_improve >= cfg.no_progress_ticks,
            "dropped": self.dropped,
            "knocked_away": not held and float(np.linalg.norm(cube[:2] - self.ref_xy)) > cfg.knock_distance,
            "empty_grasp": self.empty_ticks >= cfg.empty_grasp_ticks,
            "time_running_out": max_steps - step
            <= cfg.time_factor * expert_ticks_needed(env, speed) + cfg.time_margin + delay,
        }
        self.active = [name for name in cfg.triggers if checks[name]]
        return self.active


def at_place(env: TabletopEnv, cube: np.ndarray, place: np.ndarray | None) -> bool:
    if place is None:
        return False
    return bool(np.linalg.norm(cube[:2] - place[:2]) < env.cube_half and cube[2] - place[2] < 0.01)


def potential(env: TabletopEnv) -> float:
    """Minus the distance (m) left to cover to finish the task, plus a bonus for holding the cube."""
    goal = env.task.expert_goal(env, env.episode)
    cube = env.cube_pos(goal.cube)
    lifted = np.array([cube[0], cube[1], env.cube_half + goal.lift_height])
    target = lifted if goal.place is None else goal.place
    carry = float(np.linalg.norm(cube - target))
    if env.is_grasped(goal.cube):
        return HOLD_BONUS - carry
    return -float(np.linalg.norm(env.ee_pos() - cube)) - carry


def stage(env: TabletopEnv, lift: float) -> int:
    """0: cube not held (or not lifted); 1: held and lifted ``lift``; 2: held above its place."""
    goal = env.task.expert_goal(env, env.episode)
    cube = env.cube_pos(goal.cube)
    if not (env.is_grasped(goal.cube) and cube[2] >= env.cube_half + lift):
        return 0
    if goal.place is not None and np.linalg.norm(cube[:2] - goal.place[:2]) < 0.01:
        return 2
    return 1


def expert_ticks_needed(env: TabletopEnv, speed: float) -> float:
    """Straight-line control ticks the scripted expert needs to finish from the current state."""
    goal = env.task.expert_goal(env, env.episode)
    cube, h, ee = env.cube_pos(goal.cube), env.cube_half, env.ee_pos()
    per_tick = speed / env.control_hz
    slow = 0.4 * per_tick  # the expert descends at 40% speed
    hover = env.robot.hover_clearance + 2 * h
    ticks = 0.0
    if not env.is_grasped(goal.cube):
        grasp_z = cube[2] + 0.25 * h
        if np.linalg.norm(ee[:2] - cube[:2]) > h / 2:  # go above the cube, then down
            ticks += np.linalg.norm(ee - (cube + np.array([0.0, 0.0, hover]))) / per_tick + hover / slow
        else:
            ticks += max(0.0, ee[2] - grasp_z) / slow
        ticks += CLOSE_TICKS + 2
    if goal.place is None:
        ticks += max(0.0, h + goal.lift_height - cube[2]) / per_tick
    else:
        ticks += (hover + np.linalg.norm(cube[:2] - goal.place[:2])) / per_tick + hover / slow + 3
    return float(ticks)


# ----------------------------------------------------------------------------- simulated person
class SimulatedOperator(Operator):
    name = "simulated"

    def __init__(self, cfg: SimulatedOperatorConfig) -> None:
        self.cfg = cfg
        self.monitor = SceneMonitor(cfg)

    def reset(self, env: TabletopEnv) -> None:
        super().reset(env)
        self.expert = ScriptedExpert(env)
        self.monitor = SceneMonitor(self.cfg)
        self.monitor.restart(env, 0)
        self.takeovers = 0
        self.driven = 0
        self._active_since: int | None = None
        self._observed_step = -1
        self._start_step = 0
        self._start_stage = 0
        self._reason = ""

    # budget ---------------------------------------------------------------------------------
    def _budget_left(self, tick: TickInfo) -> bool:
        cfg = self.cfg
        if cfg.max_takeovers >= 0 and self.takeovers >= cfg.max_takeovers:
            return False
        return self.driven < cfg.max_takeover_fraction * tick.max_steps

    def _observe(self, tick: TickInfo) -> list[str]:
        if tick.step != self._observed_step:
            self._observed_step = tick.step
            active = self.monitor.update(self.env, tick.step, tick.max_steps, self.expert.speed,
                                         self.cfg.reaction_delay)
            if active and self._active_since is None:
                self._active_since = tick.step
            elif not active:
                self._active_since = None
        return self.monitor.active

    # the three questions ----------------------------------------------------------------------
    def watch(self, tick: TickInfo) -> Verdict | None:
        active = self._observe(tick)
        if not active or self._active_since is None:
            return None
        if tick.step - self._active_since >= self.cfg.reaction_delay and self._budget_left(tick):
            return Verdict(Decision.TAKEOVER, f"scene: {', '.join(active)}")
        return None

    def review(self, proposal: Proposal, tick: TickInfo) -> Verdict:
        active = self._observe(tick)
        budget = self._budget_left(tick)
        if not proposal.risk.high:  # e.g. escalated for safety clamps only: the filtered chunk is safe
            return Verdict(Decision.APPROVE, f"{proposal.risk.describe()}: the filtered chunk is safe")
        if active and budget:
            return Verdict(Decision.TAKEOVER, f"{proposal.risk.describe()} and scene: {', '.join(active)}")
        if proposal.vetoes_in_row < self.cfg.max_vetoes:
            return Verdict(Decision.VETO, f"{proposal.risk.describe()}: hold and re-query")
        if budget:
            return Verdict(Decision.TAKEOVER, f"{proposal.risk.describe()} after {proposal.vetoes_in_row} vetoes")
        return Verdict(Decision.APPROVE, f"{proposal.risk.describe()} but the attention budget is spent")

    def take_control(self, tick: TickInfo, reason: str) -> None:
        self.takeovers += 1
        self.expert.reset()
        self._start_step = tick.step
        self._start_stage = stage(self.env, self.cfg.handback_lift)
        self._reason = reason

    def act(self, tick: TickInfo) -> np.ndarray | Verdict:
        active = self._observe(tick)
        cfg = self.cfg
        if self.driven >= cfg.max_takeover_fraction * tick.max_steps:
            return self._hand_back(tick, "attention budget spent")
        now = stage(self.env, cfg.handback_lift)
        finishing = cfg.handback == "never" or "time_running_out" in self._reason
        if (not finishing and tick.step - self._start_step >= cfg.min_takeover_ticks
                and now > self._start_stage and not active):
            return self._hand_back(tick, f"recovered: task stage {self._start_stage} -> {now}")
        self.driven += 1
        return self.expert.act()

    def _hand_back(self, tick: TickInfo, reason: str) -> Verdict:
        self.monitor.restart(self.env, tick.step)
        self._active_since = None
        return Verdict(Decision.HANDBACK, reason)


def build_operator(cfg: OperatorConfig, **terminal_kwargs: Any) -> Operator:
    """The operator ``cfg.kind`` names; ``terminal_kwargs`` (fd_in, fd_out) reach the terminal operator."""
    if cfg.kind == "auto":
        return AutoOperator()
    if cfg.kind == "simulated":
        return SimulatedOperator(cfg.simulated)
    if cfg.kind == "terminal":
        from vla.supervision.terminal import TerminalOperator

        return TerminalOperator(cfg.terminal, **terminal_kwargs)
    raise ValueError(f"gate.operator.kind={cfg.kind!r} is not supported; use auto, simulated or terminal")
