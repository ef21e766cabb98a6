"""The supervision gate between a policy and the robot: safety filter -> risk score -> operator.

Per control tick, :meth:`SupervisionGate.tick` returns the action to send and who drove it:

* the operator may step in on its own (``watch``) while the policy drives;
* while the operator drives, its actions (through the safety filter) are sent until it hands back;
* when the policy's queue of approved actions is empty, the gate requests a chunk, filters the
  actions it would execute (``n_action_steps``), scores the risk, and either approves it itself or,
  when it escalates (``escalate``), asks the operator: approve (queue it), veto (hold this tick and
  re-query on the next), take over, or abort (safe stop: hold position, the episode ends).

A chunk the safety filter rejects, or a policy call that raises, holds position and is re-queried on
the next tick. Every decision is logged with wall-clock time, step, actor, reason and risk.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from vla.supervision.config import GateConfig
from vla.supervision.operators import AutoOperator, Decision, Operator, Proposal, TickInfo, Verdict
from vla.supervision.risk import RiskEstimator, RiskScore
from vla.supervision.safety import SafetyFilter

if TYPE_CHECKING:
    from envs.tabletop import TabletopEnv

log = logging.getLogger(__name__)

# ``propose(n_samples)`` returns one chunk (H, A), or (n_samples, H, A) when n_samples > 1.
ChunkSource = Callable[[int], np.ndarray]


class Mode(StrEnum):
    POLICY = "policy"
    OPERATOR = "operator"
    STOPPED = "stopped"


@dataclass
class DecisionRecord:
    time: float  # wall clock (unix seconds)
    step: int
    decision: str
    actor: str  # gate | safety | the operator's name
    reason: str
    risk: float | None  # None: no score for this decision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateStats:
    """Per-episode counters; the evaluation reads them."""

    proposals: int = 0
    approvals: int = 0
    escalations: int = 0
    vetoes: int = 0
    rejections: int = 0
    takeovers: int = 0
    handbacks: int = 0
    aborted: bool = False
    abort_reason: str | None = None
    policy_steps: int = 0
    operator_steps: int = 0
    hold_steps: int = 0
    clamps: Counter[str] = field(default_factory=Counter)  # policy actions, by reason
    operator_clamps: Counter[str] = field(default_factory=Counter)
    rejection_reasons: Counter[str] = field(default_factory=Counter)
    risks: list[float] = field(default_factory=list)  # one per scored proposal (nan: none)
    takeover_steps: list[int] = field(default_factory=list)
    takeover_reasons: list[str] = field(default_factory=list)


@dataclass
class TickResult:
    action: np.ndarray  # what to send (on a stop: the hold command)
    actor: str  # policy | operator | hold | stopped
    risk: float  # the latest risk score (nan: none yet)
    decision: DecisionRecord | None  # the last decision taken this tick


class SupervisionGate:
    def __init__(
        self,
        cfg: GateConfig,
        env: TabletopEnv,
        operator: Operator | None = None,
        *,
        risk_kind: str = "consistency",
        n_action_steps: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``risk_kind``: samples | consistency | none (see ``risk.resolve_risk_kind``).
        ``n_action_steps``: actions executed per approved chunk when ``cfg.n_action_steps`` is 0
        (None: the whole chunk)."""
        self.cfg, self.env = cfg, env
        self.operator = operator if operator is not None else AutoOperator()
        self.safety = SafetyFilter(env, cfg.safety)
        self.risk = RiskEstimator(cfg.risk, risk_kind, env.robot.n_arm)
        self.n_action_steps = cfg.n_action_steps or n_action_steps
        self.clock = clock
        self.log: list[DecisionRecord] = []
        self.stats = GateStats()
        self.mode = Mode.POLICY
        self._queue: deque[np.ndarray] = deque()
        self._step = 0
        self._vetoes_in_row = 0
        self._last_risk = float("nan")
        self._tick_decision: DecisionRecord | None = None
        self.last_command = self._measured_command()

    def _measured_command(self) -> np.ndarray:
        return np.append(self.env.arm_qpos(), self.env.gripper_state())

    @property
    def stopped(self) -> bool:
        return self.mode is Mode.STOPPED

    def reset(self) -> None:
        """Start an episode (call after ``env.reset``)."""
        self.log, self.stats = [], GateStats()
        self.mode = Mode.POLICY
        self._queue.clear()
        self._step = 0
        self._vetoes_in_row = 0
        self._last_risk = float("nan")
        self.risk.forget()
        self.last_command = self._measured_command()
        self.operator.reset(self.env)

    # ------------------------------------------------------------------------------ per tick
    def tick(self, obs: Mapping[str, Any], propose: ChunkSource) -> TickResult:
        """The action for this control tick; ``propose`` is called only when a new chunk is needed."""
        self._tick_decision = None
        info = TickInfo(self._step, self.env.max_steps, obs, self.last_command.copy())
        if self.mode is Mode.POLICY:
            verdict = self.operator.watch(info)
            if verdict is not None:
                self._apply(verdict, info, self.operator.name)
        result = None
        if self.mode is Mode.OPERATOR:
            result = self._operator_tick(info)
        if result is None and self.mode is Mode.POLICY:
            if not self._queue:
                self._request(info, propose)
                if self.mode is Mode.OPERATOR:
                    result = self._operator_tick(info)
            if result is None and self._queue:
                result = self._send(self._queue.popleft(), "policy")
        if result is None:
            result = self._hold("stopped" if self.stopped else "hold")
        self._step += 1
        return result

    def _operator_tick(self, info: TickInfo) -> TickResult | None:
        out = self.operator.act(info)
        if isinstance(out, Verdict):
            self._apply(out, info, self.operator.name)
            return None
        fr = self.safety.filter(out, self.last_command)
        if fr.rejected:
            self._reject(info, f"operator action: {fr.reason}", fr.reason or "")
            return self._hold("hold")
        self.stats.operator_clamps.update(fr.clamps)
        return self._send(fr.actions[0], "operator")

    def _send(self, action: np.ndarray, actor: str) -> TickResult:
        self.last_command = np.asarray(action, dtype=float)
        if actor == "policy":
            self.stats.policy_steps += 1
        else:
            self.stats.operator_steps += 1
        return TickResult(self.last_command.copy(), actor, self._last_risk, self._tick_decision)

    def _hold(self, actor: str) -> TickResult:
        if actor == "hold":
            self.stats.hold_steps += 1
        return TickResult(self.last_command.copy(), actor, self._last_risk, self._tick_decision)

    # ------------------------------------------------------------------------------ per chunk
    def _request(self, info: TickInfo, propose: ChunkSource) -> None:
        self.stats.proposals += 1
        try:
            out = np.asarray(propose(self.risk.n_samples), dtype=float)
        except Exception as exc:  # a failing policy must not move the robot: hold and re-query
            if not self.stats.rejection_reasons["policy_error"]:
                log.warning("policy raised at step %d; holding position", info.step, exc_info=True)
            self._reject(info, f"policy raised {type(exc).__name__}: {exc}", "policy_error")
            return
        samples = out if out.ndim == 3 and self.risk.n_samples > 1 else None
        chunk = out[0] if samples is not None else out
        executed = chunk[: self.n_action_steps] if self.n_action_steps else chunk
        fr = self.safety.filter(executed, self.last_command)
        if fr.rejected:
            self._reject(info, f"safety filter: {fr.reason}", fr.reason or "")
            return
        risk = self.risk.score(chunk, info.step, samples)
        self._last_risk = risk.value
        self.stats.risks.append(risk.value)
        why = self._escalation(risk, fr.clamps)
        if why:
            self.stats.escalations += 1
            proposal = Proposal(info.step, fr.actions, chunk, risk, why, dict(fr.clamps),
                                fr.ee_targets if fr.ee_targets is not None else np.zeros((0, 3)),
                                self._vetoes_in_row)
            verdict, actor = self.operator.review(proposal, info), self.operator.name
        else:
            verdict, actor = Verdict(Decision.APPROVE, risk.describe()), "gate"
        self._apply(verdict, info, actor, risk)
        if verdict.decision is Decision.APPROVE:
            self.stats.clamps.update(fr.clamps)
            self._queue.extend(fr.actions)

    def _escalation(self, risk: RiskScore, clamps: Counter[str]) -> list[str]:
        if self.cfg.escalate == "always":
            return ["every chunk is reviewed (gate.escalate=always)"]
        if self.cfg.escalate == "never":
            return []
        why = []
        if risk.high:
            why.append(risk.describe())
        if clamps:
            why.append("safety clamped " + ", ".join(f"{k} x{v}" for k, v in sorted(clamps.items())))
        return why

    def _reject(self, info: TickInfo, reason: str, key: str) -> None:
        self.stats.rejections += 1
        self.stats.rejection_reasons[key] += 1
        self._record(info, Decision.REJECT, "safety", reason, None)

    def _apply(self, verdict: Verdict, info: TickInfo, actor: str, risk: RiskScore | None = None) -> None:
        d = verdict.decision
        value = risk.value if risk is not None else None
        self._record(info, d, actor, verdict.reason, value)
        if d is Decision.APPROVE:
            self.stats.approvals += 1
            self._vetoes_in_row = 0
        elif d is Decision.VETO:
            self.stats.vetoes += 1
            self._vetoes_in_row += 1
        elif d is Decision.TAKEOVER:
            self.stats.takeovers += 1
            self.stats.takeover_steps.append(info.step)
            self.stats.takeover_reasons.append(verdict.reason)
            self._switch(Mode.OPERATOR)
            self.operator.take_control(info, verdict.reason)
        elif d is Decision.HANDBACK:
            self.stats.handbacks += 1
            self._switch(Mode.POLICY)
        elif d is Decision.ABORT:
            self.stats.aborted, self.stats.abort_reason = True, verdict.reason
            self._switch(Mode.STOPPED)
        else:
            raise ValueError(f"an operator may not answer {d!r}; use approve, veto, takeover, handback or abort")

    def _switch(self, mode: Mode) -> None:
        # Chunks predicted before someone else drove describe a stale plan: drop them.
        self.mode = mode
        self._queue.clear()
        self._vetoes_in_row = 0
        self.risk.forget()

    def _record(self, info: TickInfo, decision: Decision, actor: str, reason: str, risk: float | None) -> None:
        risk = None if risk is None or not np.isfinite(risk) else float(risk)
        rec = DecisionRecord(self.clock(), info.step, str(decision), actor, reason, risk)
        self.log.append(rec)
        self._tick_decision = rec

    # ------------------------------------------------------------------------------ stop
    def abort(self, reason: str) -> None:
        """Safe stop from outside the operator (e.g. the control loop's emergency stop)."""
        info = TickInfo(self._step, self.env.max_steps, {}, self.last_command.copy())
        self._apply(Verdict(Decision.ABORT, reason), info, "gate")
