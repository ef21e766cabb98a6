"""The supervised control loop: a robot at a fixed rate, fed by chunks that pass a gate.

Each tick: read the observation -> collect a finished chunk (check it, pass it through the gate,
blend it into the action queue) -> ask for the next chunk if the queue is running low -> pick the
action (operator while it is in control, else the queue, else hold) -> send -> record -> sleep to
the next deadline. With ``async_inference`` the chunk is computed in a background thread while the
queue keeps the robot moving; without it the tick blocks on inference (the baseline).

The next chunk is requested when ``refill_at`` or fewer actions remain. The lead grows with the
measured inference latency (p90, in ticks, plus one) so a slow policy gets asked earlier instead of
letting the queue run dry.

Faults never stop the robot abruptly: a policy that raises, returns NaN or a wrong shape, or
times out leaves the queue as it was (hold when it is empty); a failed read holds the last target.
Each is counted and logged; after ``max_consecutive_faults`` faulty ticks in a row the episode
stops with a safe stop. ``estop()`` (thread-safe) stops at the next tick.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
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
DECISIONS = ("approve", "veto", "takeover", "abort")


@dataclass
class GateVerdict:
    """What the gate made of one chunk: ``chunk`` is the (safety-filtered) chunk to run on approve."""

    decision: str  # approve | veto | takeover | abort
    chunk: np.ndarray | None = None
    reason: str = ""
    risk: float = float("nan")

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"gate decision {self.decision!r} is unknown; expected one of {list(DECISIONS)}")


class ChunkGate(Protocol):
    """What the loop needs from a supervision gate."""

    def reset(self, robot: Robot) -> None:
        """A new episode starts on ``robot``."""

    def review(self, chunk: np.ndarray, observation: Mapping[str, Any], obs_tick: int, tick: int) -> GateVerdict:
        """Judge a chunk predicted from the observation of ``obs_tick``, arriving at ``tick``."""

    def operator_action(self, observation: Mapping[str, Any], tick: int) -> np.ndarray | None:
        """While the operator is in control: its action, or None to hand control back to the policy."""


class PassThroughGate:
    """Approves every chunk unchanged: the loop without supervision (timing baselines, tests)."""

    def reset(self, robot: Robot) -> None:
        pass

    def review(self, chunk: np.ndarray, observation: Mapping[str, Any], obs_tick: int, tick: int) -> GateVerdict:
        return GateVerdict("approve", chunk)

    def operator_action(self, observation: Mapping[str, Any], tick: int) -> np.ndarray | None:
        return None


@dataclass
class ControlConfig:
    hz: float = 10.0
    async_inference: bool = True
    realtime: bool = True  # sleep to hold the rate; false steps a simulator as fast as it goes (evaluation)
    blend: str = "crossfade"  # crossfade | ensemble | none
    ensemble_m: float = 0.1
    execute_steps: int = 5  # actions of a chunk run before the next is due (the policy's n_action_steps)
    refill_at: int | None = None  # request when <= this many actions remain; None: chunk length - execute_steps
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
        if self.refill_at is not None and self.refill_at < 0:
            raise ValueError(f"control.refill_at must be >= 0 or null, got {self.refill_at}")
        if not self.inference_timeout_s > 0:
            raise ValueError(f"control.inference_timeout_s must be positive, got {self.inference_timeout_s}")
        if self.max_consecutive_faults < 1:
            raise ValueError(f"control.max_consecutive_faults must be >= 1, got {self.max_consecutive_faults}")

    @property
    def period(self) -> float:
        return 1.0 / self.hz


@dataclass
class EpisodeReport:
    steps: int = 0
    success: bool = False
    stop_reason: str = ""
    wall_s: float = 0.0
    deadline_misses: int = 0
    tick_s: list[float] = field(default_factory=list)  # work time of each tick (without the sleep)
    latencies_s: list[float] = field(default_factory=list)  # inference wall time of each completed request
    faults: Counter = field(default_factory=Counter)  # kind -> count
    held_ticks: int = 0  # ticks with no action to run (queue dry, fault) that held position
    takeovers: int = 0  # times the operator took control
    operator_steps: int = 0
    vetoes: int = 0
    chunks: int = 0  # chunks accepted into the queue
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def achieved_hz(self) -> float:
        return self.steps / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def deadline_miss_rate(self) -> float:
        return self.deadline_misses / self.steps if self.steps else 0.0

    def latency(self) -> dict[str, float]:
        return latency_summary(self.latencies_s)


def check_chunk(chunk: Any, action_dim: int) -> np.ndarray:
    """A predictor's output as a (H, A) float array; raises ValueError naming what is wrong."""
    a = np.asarray(chunk, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]  # a batch of one
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != action_dim:
        raise ValueError(f"chunk has shape {a.shape}, expected (H, {action_dim})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"chunk has {int((~np.isfinite(a)).sum())} NaN/inf values")
    return a


class ControlLoop:
    def __init__(
        self,
        robot: Robot,
        predictor: ChunkPredictor,
        cfg: ControlConfig,
        gate: ChunkGate | None = None,
        recorder: InterventionRecorder | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.robot, self.cfg, self.gate, self.recorder = robot, cfg, gate or PassThroughGate(), recorder
        self.clock, self.sleep = clock, sleep
        self.inference = AsyncInference(predictor, cfg.inference_timeout_s)
        self.queue = ActionQueue(cfg.blend, cfg.ensemble_m, robot.gripper_dims)
        self._estop = threading.Event()
        self._chunk_len: int | None = None
        self._unhealthy = False

    # -------------------------------------------------------------------------------- control
    def estop(self) -> None:
        """Emergency stop: the running episode stops safely at its next tick (callable from any thread)."""
        self._estop.set()

    def close(self) -> None:
        self.inference.close()

    def _refill_at(self) -> int:
        chunk = self._chunk_len or self.cfg.execute_steps
        base = self.cfg.refill_at if self.cfg.refill_at is not None else max(0, chunk - self.cfg.execute_steps)
        if not self.cfg.async_inference:
            return base
        lat = self.inference.latencies[-20:]
        lead = math.ceil(float(np.percentile(lat, 90)) * self.cfg.hz) + 1 if lat else 1
        return min(max(base, lead), max(chunk - 1, 0))

    # -------------------------------------------------------------------------------- episode
    def run_episode(self, seed: int | None = None, max_steps: int | None = None) -> EpisodeReport:
        """Run one episode (``SimRobot`` is reset with ``seed``) until done, ``max_steps``, abort or e-stop."""
        cfg, robot, rep = self.cfg, self.robot, EpisodeReport()
        max_steps = max_steps or cfg.max_steps
        self._estop.clear()
        self.queue.clear()
        self._drain()
        self._unhealthy = False
        if isinstance(robot, SimRobot):
            robot.reset(seed)
        self.gate.reset(robot)
        n_lat0 = len(self.inference.latencies)
        obs = self._safe_read(rep)
        if self.recorder is not None:
            self.recorder.begin_episode(str(obs.get(TASK_KEY, "")) if obs else "")
        operator, faults_in_row, t = False, 0, 0
        start = deadline = self.clock()
        try:
            while True:
                tick_start = self.clock()
                if self._estop.is_set():
                    rep.stop_reason = "estop"
                    break
                if t > 0:
                    obs = self._safe_read(rep)
                verdict = self._collect(obs, t, rep, operator) if obs is not None else None
                if verdict is not None and verdict.decision == "abort":
                    rep.stop_reason = "abort"
                    break
                if verdict is not None and verdict.decision == "takeover" and not operator:
                    operator = True
                    rep.takeovers += 1
                    self.queue.clear()
                action, operator = self._choose(obs, t, operator)
                # A dry queue while the policy is healthy is only latency; while it keeps failing it is a fault.
                faulty = obs is None or (action is None and self._unhealthy)
                faults_in_row = faults_in_row + 1 if faulty else 0
                if faults_in_row >= cfg.max_consecutive_faults:
                    rep.stop_reason = "faults"
                    log.error("stopping: %d faulty ticks in a row (%s)", faults_in_row, dict(rep.faults))
                    break
                try:
                    sent = robot.send(action) if action is not None else robot.hold()
                except Exception as exc:  # any send failure ends the episode; stop() is still tried
                    rep.faults["send"] += 1
                    rep.stop_reason = "send_failure"
                    log.error("robot send failed at tick %d: %s", t, exc)
                    break
                rep.held_ticks += int(action is None)
                rep.operator_steps += int(operator)
                if self.recorder is not None and obs is not None:
                    self.recorder.add_frame(obs, sent, intervention=operator)
                t = rep.steps = t + 1
                if isinstance(robot, SimRobot) and robot.done:
                    rep.stop_reason = "success" if robot.success else "time_limit"
                    break
                if max_steps is not None and t >= max_steps:
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
                self._safe_stop(rep)
            rep.wall_s = self.clock() - start
            rep.success = bool(isinstance(robot, SimRobot) and robot.success)
            rep.latencies_s = list(self.inference.latencies[n_lat0:])
            if self.recorder is not None:
                self.recorder.end_episode()
        return rep

    def _drain(self) -> None:
        """Forget a previous episode's in-flight request: wait it out so its answer cannot leak in."""
        if self.inference.busy:
            self.inference.wait(self.cfg.inference_timeout_s)
        self.inference.poll()

    def _safe_read(self, rep: EpisodeReport) -> dict[str, Any] | None:
        try:
            obs = self.robot.read()
        except RobotReadError as exc:
            rep.faults["read"] += 1
            log.warning("robot read failed (holding position): %s", exc)
            return None
        state = np.asarray(obs.get(STATE_KEY, []), dtype=np.float64)
        if not np.all(np.isfinite(state)):
            rep.faults["read"] += 1
            log.warning("robot state is not finite (holding position): %s", state.tolist())
            return None
        return obs

    def _safe_stop(self, rep: EpisodeReport) -> None:
        try:
            self.robot.stop()
        except Exception as exc:  # report it; the episode is ending anyway
            rep.faults["stop"] += 1
            log.error("safe stop failed: %s", exc)

    def _fault(self, rep: EpisodeReport, kind: str, msg: str, t: int) -> None:
        rep.faults[kind] += 1
        self._unhealthy = True
        log.warning("tick %d: %s (%s); keeping the current plan, holding if it runs out", t, msg, kind)

    def _collect(self, obs: Mapping[str, Any], t: int, rep: EpisodeReport, operator: bool) -> GateVerdict | None:
        """Take a finished chunk (or timeout), check and gate it, blend it in; request the next one."""
        result: InferenceResult | None = self.inference.poll()
        if result is None and not self.cfg.async_inference and self._want_chunk(t, operator):
            self.inference.submit(obs, t)
            result = self.inference.wait()
        verdict = self._accept(result, obs, t, rep, operator) if result is not None else None
        if self.cfg.async_inference and self._want_chunk(t, operator):
            self.inference.submit(obs, t)
        return verdict

    def _want_chunk(self, t: int, operator: bool) -> bool:
        if operator or self.inference.busy:
            return False
        return self.queue.remaining(t) <= self._refill_at()

    def _accept(self, result: InferenceResult, obs: Mapping[str, Any], t: int, rep: EpisodeReport,
                operator: bool) -> GateVerdict | None:
        if result.timed_out:
            self._fault(rep, "timeout", str(result.error), t)
            return None
        if result.error is not None:
            self._fault(rep, "policy_error", f"{type(result.error).__name__}: {result.error}", t)
            return None
        try:
            chunk = check_chunk(result.chunk, self.robot.action_dim)
        except ValueError as exc:
            self._fault(rep, "nan" if "NaN" in str(exc) else "bad_shape", str(exc), t)
            return None
        self._unhealthy = False
        if operator:
            return None  # the operator drives; a chunk asked for before the takeover is moot
        verdict = self.gate.review(chunk, obs, result.tick, t)
        rep.decisions.append({"tick": t, "decision": verdict.decision, "reason": verdict.reason,
                              "risk": float(verdict.risk)})
        if verdict.decision == "veto":
            rep.vetoes += 1
        elif verdict.decision == "approve" and verdict.chunk is not None:
            self._chunk_len = len(verdict.chunk)
            if self.queue.push(verdict.chunk, result.tick, t) > 0:
                rep.chunks += 1
            else:
                rep.faults["stale_chunk"] += 1
        return verdict

    def _choose(self, obs: Mapping[str, Any] | None, t: int, operator: bool) -> tuple[np.ndarray | None, bool]:
        """The action for this tick and whether the operator drives it; None means hold position."""
        if obs is None:
            return None, operator  # blind: hold rather than run the plan without seeing the scene
        if operator:
            action = self.gate.operator_action(obs, t)
            if action is not None:
                return np.asarray(action, dtype=np.float64), True
            # Handed back: the policy is asked afresh from this observation.
            if not self.inference.busy:
                self.inference.submit(obs, t)
            return None, False
        return self.queue.pop(t), False


def summarize(reports: list[EpisodeReport]) -> dict[str, Any]:
    """Figures over episodes: steps, achieved rate, deadline misses, latency, interventions, success."""
    steps = sum(r.steps for r in reports)
    wall = sum(r.wall_s for r in reports)
    lat = latency_summary([x for r in reports for x in r.latencies_s])
    ticks = np.asarray([x for r in reports for x in r.tick_s]) if reports else np.zeros(0)
    faults: Counter = Counter()
    for r in reports:
        faults.update(r.faults)
    return {
        "episodes": len(reports),
        "steps": steps,
        "achieved_hz": steps / wall if wall > 0 else float("nan"),
        "deadline_misses": sum(r.deadline_misses for r in reports),
        "deadline_miss_pct": 100.0 * sum(r.deadline_misses for r in reports) / steps if steps else 0.0,
        "tick_work_p99_ms": float(np.percentile(ticks, 99) * 1e3) if ticks.size else float("nan"),
        "latency_median_ms": lat["median_ms"],
        "latency_p99_ms": lat["p99_ms"],
        "held_ticks": sum(r.held_ticks for r in reports),
        "interventions": sum(r.takeovers for r in reports),
        "interventions_per_episode": sum(r.takeovers for r in reports) / len(reports) if reports else 0.0,
        "operator_steps": sum(r.operator_steps for r in reports),
        "vetoes": sum(r.vetoes for r in reports),
        "success": sum(r.success for r in reports),
        "success_rate": sum(r.success for r in reports) / len(reports) if reports else float("nan"),
        "faults": dict(faults),
        "stop_reasons": dict(Counter(r.stop_reason for r in reports)),
    }
