"""The supervised control loop: a robot at a fixed rate, fed by chunks that pass a gate.

Each tick: read the observation -> take a finished chunk from the background inference, check it
and blend it into the plan (:class:`~vla.supervision.blending.ActionQueue`, aligned by time) ->
ask for the next chunk if the gate will need one soon -> ``gate.tick(obs, propose)`` picks the
action (the policy's approved actions, the operator's while it drives, or hold) -> send -> record
-> sleep to the next deadline.

The gate (:class:`~vla.supervision.gate.SupervisionGate`, or :class:`PassThroughGate` without
supervision) owns the decision per chunk: it calls ``propose`` when its queue of approved actions
is empty, filters and scores what it gets, and runs ``n_action_steps`` of it. ``propose`` hands it
the blended plan from this tick on. With ``async_inference`` the chunk for the gate's next request
is asked for ``lead`` ticks ahead (the p90 of the measured latency plus one), so it is usually ready
and blended in when the gate asks; if not, the gate gets the rest of the previous plan, and only an
empty plan (episode start, after a veto or a takeover) waits for inference. Without
``async_inference`` every request blocks the tick (the baseline it is measured against).

Faults never stop the robot abruptly: a policy that raises, returns NaN or a wrong shape, or times
out leaves the plan as it was (the gate holds when it is empty); a failed read holds the last target
without consulting the gate. Each is counted and logged; after ``max_consecutive_faults`` faulty
ticks in a row the episode ends with a safe stop. ``estop()`` (thread-safe) stops at the next tick.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vla.supervision.blending import BLEND_MODES, ActionQueue
from vla.supervision.inference import AsyncInference, ChunkPredictor, InferenceResult, latency_summary
from vla.supervision.intervention_recorder import InterventionRecorder
from vla.supervision.robot import Robot, RobotReadError, SimRobot
from vla.types import STATE_KEY, TASK_KEY

log = logging.getLogger(__name__)


@dataclass
class ControlConfig:
    hz: float = 10.0
    async_inference: bool = True
    realtime: bool = True  # sleep to hold the rate; false steps a simulator as fast as it goes (evaluation)
    blend: str = "crossfade"  # crossfade | ensemble | none
    ensemble_m: float = 0.1
    execute_steps: int = 5  # actions run per chunk by PassThroughGate (SupervisionGate has its own setting)
    lead: int | None = None  # ticks ahead of the gate's need to request a chunk; None: from measured latency
    inference_timeout_s: float = 1.0
    max_consecutive_faults: int = 20
    max_steps: int | None = None  # per episode; None: until the robot reports done (SimRobot) or forever

    def __post_init__(self) -> None:
        if not self.hz > 0:
            raise ValueError(f"control.hz must be positive, got {self.hz}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"control.blend={self.blend!r} is unknown; choose from {list(BLEND_MODES)}")
        if self.execute_steps < 1:
            raise ValueError(f"control.execute_steps must be >= 1, got {self.execute_steps}")
        if self.lead is not None and self.lead < 0:
            raise ValueError(f"control.lead must be >= 0 ticks or null (from latency), got {self.lead}")
        if not self.inference_timeout_s > 0:
            raise ValueError(f"control.inference_timeout_s must be positive, got {self.inference_timeout_s}")
        if self.max_consecutive_faults < 1:
            raise ValueError(f"control.max_consecutive_faults must be >= 1, got {self.max_consecutive_faults}")

    @property
    def period(self) -> float:
        return 1.0 / self.hz


# ------------------------------------------------------------------------------------------ gate


@dataclass
class GateTick:
    """One tick's outcome (SupervisionGate's TickResult has the same fields)."""

    action: np.ndarray
    actor: str  # policy | operator | hold | stopped
    risk: float = float("nan")
    decision: Any = None  # the last decision taken this tick (with .decision, .reason), if any


class TickGate(Protocol):
    """What the loop needs from a gate; :class:`~vla.supervision.gate.SupervisionGate` is one."""

    def reset(self) -> None: ...

    def tick(self, obs: Mapping[str, Any], propose: Callable[[int], np.ndarray]) -> Any: ...


class ChunkUnavailable(RuntimeError):
    """``propose`` had nothing to offer (the policy failed or timed out); the gate holds position."""


class PassThroughGate:
    """No supervision: runs ``n_action_steps`` of every chunk; holds when ``propose`` fails."""

    def __init__(self, n_action_steps: int) -> None:
        self.n_action_steps = n_action_steps
        self._queue: deque[np.ndarray] = deque()
        self._last: np.ndarray | None = None

    def reset(self) -> None:
        self._queue.clear()
        self._last = None

    def tick(self, obs: Mapping[str, Any], propose: Callable[[int], np.ndarray]) -> GateTick:
        if self._last is None:
            self._last = np.asarray(obs[STATE_KEY], dtype=np.float64)
        if not self._queue:
            try:
                self._queue.extend(np.asarray(propose(1), dtype=np.float64)[: self.n_action_steps])
            except ChunkUnavailable:
                return GateTick(self._last.copy(), "hold")
        self._last = self._queue.popleft()
        return GateTick(self._last.copy(), "policy")


# ---------------------------------------------------------------------------------------- report


@dataclass
class EpisodeReport:
    steps: int = 0
    success: bool = False
    stop_reason: str = ""
    wall_s: float = 0.0
    span_s: float = 0.0  # from the first tick's start to the last's: steps - 1 periods when on time
    deadline_misses: int = 0
    tick_s: list[float] = field(default_factory=list)  # work time of each tick (without the sleep)
    latencies_s: list[float] = field(default_factory=list)  # inference wall time of each completed request
    faults: Counter = field(default_factory=Counter)  # kind -> count
    actors: Counter = field(default_factory=Counter)  # policy | operator | hold -> ticks
    takeovers: int = 0
    decisions: Counter = field(default_factory=Counter)  # gate decisions by name
    chunks: int = 0  # chunks blended into the plan

    @property
    def achieved_hz(self) -> float:
        return (self.steps - 1) / self.span_s if self.span_s > 0 else float("nan")

    @property
    def deadline_miss_rate(self) -> float:
        return self.deadline_misses / self.steps if self.steps else 0.0


def check_chunk(chunk: Any, action_dim: int) -> np.ndarray:
    """A predictor's output as (H, A), or (S, H, A) samples; raises ValueError naming what is wrong."""
    a = np.asarray(chunk, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim not in (2, 3) or a.shape[-2] < 1 or a.shape[-1] != action_dim:
        raise ValueError(f"chunk has shape {a.shape}, expected (H, {action_dim}) or (samples, H, {action_dim})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"chunk has {int((~np.isfinite(a)).sum())} NaN/inf values")
    return a


class ControlLoop:
    def __init__(
        self,
        robot: Robot,
        predictor: ChunkPredictor,
        cfg: ControlConfig,
        gate: TickGate | None = None,
        recorder: InterventionRecorder | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.robot, self.cfg, self.recorder = robot, cfg, recorder
        self.gate: TickGate = gate if gate is not None else PassThroughGate(cfg.execute_steps)
        self.clock, self.sleep = clock, sleep
        self.inference = AsyncInference(predictor, cfg.inference_timeout_s)
        self.plan = ActionQueue(cfg.blend, cfg.ensemble_m, robot.gripper_dims)
        self._estop = threading.Event()
        self._samples: tuple[int, np.ndarray] | None = None  # (start tick, (S, H, A)) of the newest chunk
        self._t, self._obs, self._next_need, self._fresh_tick = 0, None, 0, -1
        self._unhealthy, self._operator_driving, self._rep = False, False, EpisodeReport()

    def estop(self) -> None:
        """Emergency stop: the running episode stops safely at its next tick (callable from any thread)."""
        self._estop.set()

    def close(self) -> None:
        self.inference.close()

    def _lead(self) -> int:
        if self.cfg.lead is not None:
            return self.cfg.lead
        lat = self.inference.latencies[-20:]
        return math.ceil(float(np.percentile(lat, 90)) * self.cfg.hz) + 1 if lat else 1

    # ---------------------------------------------------------------------------------- episode
    def run_episode(self, seed: int | None = None, max_steps: int | None = None) -> EpisodeReport:
        """Run one episode (``SimRobot`` is reset with ``seed``) until done, ``max_steps``, abort or e-stop."""
        cfg, robot = self.cfg, self.robot
        rep = self._rep = EpisodeReport()
        max_steps = max_steps or cfg.max_steps
        self._estop.clear()
        self._forget_plan()
        if self.inference.busy:  # a previous episode's request must not leak into this one
            self.inference.wait()
        self.inference.poll()
        self._unhealthy, self._t, self._next_need, self._fresh_tick = False, 0, 0, -1
        self._operator_driving = False
        if isinstance(robot, SimRobot):
            robot.reset(seed)
        self.gate.reset()
        n_lat0 = len(self.inference.latencies)
        obs = self._safe_read()
        if obs is not None:  # the first chunk is computed before the clock starts: start-up is not a miss
            self.inference.submit(obs, 0)
            self._take(self.inference.wait())
        if self.recorder is not None:
            self.recorder.begin_episode(str(obs.get(TASK_KEY, "")) if obs else "")
        faults_in_row, prev_actor = 0, "policy"
        start = deadline = self.clock()
        try:
            while True:
                tick_start = self.clock()
                rep.span_s = tick_start - start
                if self._estop.is_set():
                    rep.stop_reason = "estop"
                    break
                if self._t > 0:
                    obs = self._safe_read()
                if obs is None:
                    action, actor = None, "hold"
                else:
                    self._take(self.inference.poll())
                    self._prefetch(obs, prev_actor)
                    self._obs = obs
                    result = self.gate.tick(obs, self._propose)
                    action, actor = np.asarray(result.action, dtype=np.float64), str(result.actor)
                    self._after_gate(result, actor, prev_actor)
                if actor == "stopped":  # the operator aborted; its emergency-stop key ends the whole run
                    why = str(getattr(getattr(self.gate, "stats", None), "abort_reason", "") or "")
                    rep.stop_reason = "estop" if "emergency" in why.lower() else "abort"
                    break
                faulty = obs is None or (actor == "hold" and self._unhealthy)
                faults_in_row = faults_in_row + 1 if faulty else 0
                if faults_in_row >= cfg.max_consecutive_faults:
                    rep.stop_reason = "faults"
                    log.error("stopping: %d faulty ticks in a row (%s)", faults_in_row, dict(rep.faults))
                    break
                try:
                    sent = robot.send(action) if action is not None else robot.hold()
                except Exception as exc:  # a refused or failed send ends the episode; stop() is still tried
                    rep.faults["send"] += 1
                    rep.stop_reason = "send_failure"
                    log.error("robot send failed at tick %d: %s", self._t, exc)
                    break
                rep.actors[actor] += 1
                if self.recorder is not None and obs is not None:
                    self.recorder.add_frame(obs, sent, intervention=actor == "operator")
                prev_actor = actor
                self._t = rep.steps = self._t + 1
                if isinstance(robot, SimRobot) and robot.done:
                    rep.stop_reason = "success" if robot.success else "time_limit"
                    break
                if max_steps is not None and self._t >= max_steps:
                    rep.stop_reason = "max_steps"
                    break
                now = self.clock()
                rep.tick_s.append(now - tick_start)
                if cfg.realtime:
                    deadline += cfg.period
                    if now > deadline:
                        rep.deadline_misses += 1
                        deadline = now  # skip the missed slot instead of bursting to catch up
                    else:
                        self.sleep(deadline - now)
        finally:
            if rep.stop_reason not in ("success", "time_limit", "max_steps"):
                self._safe_stop()
            rep.wall_s = self.clock() - start
            rep.success = bool(isinstance(robot, SimRobot) and robot.success)
            rep.latencies_s = list(self.inference.latencies[n_lat0:])
            if self.recorder is not None:
                self.recorder.end_episode()
        return rep

    # ------------------------------------------------------------------------------- per tick
    def _safe_read(self) -> dict[str, Any] | None:
        try:
            obs = self.robot.read()
        except RobotReadError as exc:
            self._rep.faults["read"] += 1
            log.warning("robot read failed (holding position): %s", exc)
            return None
        state = np.asarray(obs.get(STATE_KEY, []), dtype=np.float64)
        if not np.all(np.isfinite(state)):
            self._rep.faults["read"] += 1
            log.warning("robot state is not finite (holding position): %s", state.tolist())
            return None
        return obs

    def _safe_stop(self) -> None:
        abort = getattr(self.gate, "abort", None)
        if callable(abort) and not getattr(self.gate, "stopped", False):
            abort(self._rep.stop_reason or "control loop stopped")  # logs the stop beside the gate's decisions
        try:
            self.robot.stop()
        except Exception as exc:  # report it; the episode is ending anyway
            self._rep.faults["stop"] += 1
            log.error("safe stop failed: %s", exc)

    def _fault(self, kind: str, msg: str) -> None:
        self._rep.faults[kind] += 1
        self._unhealthy = True
        log.warning("tick %d: %s (%s); keeping the current plan, holding if it runs out", self._t, msg, kind)

    def _forget_plan(self) -> None:
        self.plan.clear()
        self._samples = None

    def _take(self, result: InferenceResult | None) -> None:
        """Check a finished request and blend its chunk into the plan."""
        if result is None:
            return
        if result.timed_out or result.error is not None:
            kind = "timeout" if result.timed_out else "policy_error"
            self._fault(kind, f"{type(result.error).__name__}: {result.error}")
            return
        try:
            chunk = check_chunk(result.chunk, self.robot.action_dim)
        except ValueError as exc:
            self._fault("nan" if "NaN" in str(exc) else "bad_shape", str(exc))
            return
        self._unhealthy = False
        if self._operator_driving:
            self._forget_plan()  # nothing to blend with: the operator moved the robot since the last plan
        self._samples = (result.tick, chunk) if chunk.ndim == 3 else None
        self._fresh_tick = result.tick
        if self.plan.push(chunk[0] if chunk.ndim == 3 else chunk, result.tick, self._t) > 0:
            self._rep.chunks += 1
        else:
            self._rep.faults["stale_chunk"] += 1

    def _prefetch(self, obs: Mapping[str, Any], prev_actor: str) -> None:
        """Ask for the chunk the gate will want next, ``lead`` ticks before it wants it."""
        if not self.cfg.async_inference or self.inference.busy:
            return
        lead = self._lead()
        # While the operator drives, a fresh chunk is kept ready for the hand-back.
        if prev_actor == "operator" or self._t >= self._next_need - lead or self.plan.remaining(self._t) <= lead:
            self.inference.submit(obs, self._t)

    def _propose(self, n_samples: int) -> np.ndarray:
        """The gate wants a chunk: the blended plan from this tick on (inference is waited for if it is empty)."""
        t = self._t
        blocking = not self.cfg.async_inference and self._fresh_tick != t
        if (blocking or self.plan.remaining(t) == 0) and not self.inference.stalled:
            if not self.inference.busy:
                self.inference.submit(self._obs, t)
            self._take(self.inference.wait())
        actions = self.plan.peek(t)
        if len(actions) == 0:
            raise ChunkUnavailable("no chunk: the policy failed, timed out or answered too late")
        n_exec = getattr(self.gate, "n_action_steps", None) or len(actions)
        self._next_need = t + min(n_exec, len(actions))
        if n_samples > 1 and self._samples is not None:
            start, samples = self._samples
            aligned = samples[:, max(0, t - start):]
            m = min(len(actions), aligned.shape[1])
            if aligned.shape[0] > 1 and m > 0:
                return np.concatenate([actions[None, :m], aligned[1:, :m]])
        return actions

    def _after_gate(self, result: Any, actor: str, prev_actor: str) -> None:
        rec = getattr(result, "decision", None)
        name = str(getattr(rec, "decision", "")) if rec is not None else ""
        if name:
            self._rep.decisions[name] += 1
        if name in ("veto", "reject"):
            self._forget_plan()  # re-query from a fresh observation, not the refused plan
            self._next_need = self._t + 1
        if actor == "operator" and prev_actor != "operator":
            self._rep.takeovers += 1
            self._forget_plan()
        self._operator_driving = actor == "operator"
        if self._operator_driving:
            self._next_need = self._t + 1


def summarize(reports: list[EpisodeReport]) -> dict[str, Any]:
    """Figures over episodes: steps, achieved rate, deadline misses, latency, interventions, success."""
    steps = sum(r.steps for r in reports)
    span = sum(r.span_s for r in reports)
    intervals = sum(max(r.steps - 1, 0) for r in reports)
    lat = latency_summary([x for r in reports for x in r.latencies_s])
    ticks = np.asarray([x for r in reports for x in r.tick_s])
    faults, actors, decisions = Counter(), Counter(), Counter()
    for r in reports:
        faults.update(r.faults)
        actors.update(r.actors)
        decisions.update(r.decisions)
    n = len(reports)
    return {
        "episodes": n,
        "steps": steps,
        "achieved_hz": intervals / span if span > 0 else float("nan"),
        "deadline_misses": sum(r.deadline_misses for r in reports),
        "deadline_miss_pct": 100.0 * sum(r.deadline_misses for r in reports) / steps if steps else 0.0,
        "tick_work_p99_ms": float(np.percentile(ticks, 99) * 1e3) if ticks.size else float("nan"),
        "latency_median_ms": lat["median_ms"],
        "latency_p99_ms": lat["p99_ms"],
        "interventions": sum(r.takeovers for r in reports),
        "interventions_per_episode": sum(r.takeovers for r in reports) / n if n else 0.0,
        "autonomy": actors["policy"] / steps if steps else float("nan"),
        "held_ticks": actors["hold"],
        "success": sum(r.success for r in reports),
        "success_rate": sum(r.success for r in reports) / n if n else float("nan"),
        "decisions": dict(decisions),
        "faults": dict(faults),
        "stop_reasons": dict(Counter(r.stop_reason for r in reports)),
    }
