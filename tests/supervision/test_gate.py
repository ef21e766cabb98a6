"""Gate decision flow: filter -> risk -> operator, with a scripted operator and hand-made chunks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from standins import ExpertPolicy, NoisySamplerPolicy

from envs.tabletop import TabletopEnv
from vla.eval.rollout import run_episode
from vla.supervision.config import GateConfig, RiskConfig
from vla.supervision.gate import SupervisionGate
from vla.supervision.operators import Decision, Operator, Proposal, TickInfo, Verdict


class ScriptedOperator(Operator):
    """Answers reviews from a list; drives ``drive_ticks`` ticks (nudging the flange roll) per takeover."""

    name = "scripted"

    def __init__(self, answers: list[Decision], drive_ticks: int = 2, watch_at: int | None = None) -> None:
        self.answers, self.drive_ticks, self.watch_at = list(answers), drive_ticks, watch_at
        self.reviewed: list[Proposal] = []

    def review(self, proposal: Proposal, tick: TickInfo) -> Verdict:
        self.reviewed.append(proposal)
        return Verdict(self.answers.pop(0), "scripted answer")

    def watch(self, tick: TickInfo) -> Verdict | None:
        if tick.step == self.watch_at:
            return Verdict(Decision.TAKEOVER, "saw something")
        return None

    def take_control(self, tick: TickInfo, reason: str) -> None:
        self.driven = 0

    def act(self, tick: TickInfo) -> np.ndarray | Verdict:
        if self.driven >= self.drive_ticks:
            return Verdict(Decision.HANDBACK, "done")
        self.driven += 1
        action = tick.last_command.copy()
        action[5] += 0.05
        return action


@pytest.fixture
def env():
    e = TabletopEnv(task="pick_cube", cameras=())
    e.reset(seed=3)
    yield e
    e.close()


def _ramp(env: TabletopEnv, n: int = 4) -> np.ndarray:
    """A chunk that turns the flange roll a little more each tick (the hand stays where it is)."""
    chunk = np.repeat(np.append(env.arm_qpos(), 0.0)[None], n, axis=0)
    chunk[:, 5] += 0.02 * np.arange(1, n + 1)
    return chunk


def _gate(env, operator, **cfg):
    clock = itertools.count(1000.0)
    gate = SupervisionGate(GateConfig(**cfg), env, operator, risk_kind="consistency", n_action_steps=2,
                           clock=lambda: float(next(clock)))
    gate.reset()
    return gate


def test_approve_veto_takeover_handback_abort(env):
    op = ScriptedOperator([Decision.APPROVE, Decision.VETO, Decision.TAKEOVER, Decision.APPROVE, Decision.ABORT])
    gate = _gate(env, op, escalate="always")
    chunk = _ramp(env)
    results = [gate.tick({}, lambda n: chunk) for _ in range(9)]
    actors = [r.actor for r in results]
    assert actors == ["policy", "policy", "hold", "operator", "operator", "policy", "policy", "stopped", "stopped"]
    np.testing.assert_allclose(results[0].action, chunk[0])
    np.testing.assert_allclose(results[1].action, chunk[1])
    np.testing.assert_allclose(results[2].action, chunk[1])  # a veto holds the last command
    np.testing.assert_allclose(results[3].action[5], chunk[1, 5] + 0.05)
    np.testing.assert_allclose(results[7].action, results[6].action)  # abort: safe stop, hold position
    assert gate.stopped
    assert [r.decision for r in gate.log] == ["approve", "veto", "takeover", "handback", "approve", "abort"]
    assert [r.step for r in gate.log] == [0, 2, 3, 5, 5, 7]
    assert all(r.time >= 1000.0 and r.reason for r in gate.log)
    assert [r.actor for r in gate.log] == ["scripted"] * 6
    s = gate.stats
    assert (s.approvals, s.vetoes, s.takeovers, s.handbacks, s.escalations) == (2, 1, 1, 1, 5)
    assert (s.policy_steps, s.operator_steps, s.hold_steps, s.aborted) == (4, 2, 1, True)
    assert s.takeover_steps == [3]
    # The operator saw why it was asked and the hand path of the proposal.
    assert op.reviewed[0].why == ["every chunk is reviewed (gate.escalate=always)"]
    assert op.reviewed[0].ee_targets.shape == (2, 3) and op.reviewed[0].actions.shape == (2, 7)


def test_unsafe_chunk_is_rejected_without_asking(env):
    op = ScriptedOperator([])
    gate = _gate(env, op, escalate="always")
    chunk = _ramp(env)
    chunk[0, 0] = np.nan
    r = gate.tick({}, lambda n: chunk)
    assert r.actor == "hold" and not op.reviewed
    assert gate.log[-1].decision == "reject" and "non_finite" in gate.log[-1].reason
    assert gate.stats.rejection_reasons == {"non_finite": 1}


def test_failing_policy_holds_and_is_requeried(env):
    gate = _gate(env, ScriptedOperator([]))
    calls = []

    def propose(n):
        calls.append(n)
        raise RuntimeError("inference failed")

    held = [gate.tick({}, propose) for _ in range(3)]
    assert [r.actor for r in held] == ["hold"] * 3 and len(calls) == 3
    assert gate.stats.rejection_reasons == {"policy_error": 3}
    assert "RuntimeError: inference failed" in gate.log[0].reason


def test_gate_approves_low_risk_itself_and_escalates_high_risk(env):
    op = ScriptedOperator([Decision.VETO] * 10)
    gate = _gate(env, op, risk=RiskConfig(consistency_threshold=0.1))
    chunk = _ramp(env)
    gate.tick({}, lambda n: chunk)  # first chunk: no previous one to compare, the gate approves
    gate.tick({}, lambda n: chunk)
    assert [r.actor for r in gate.log] == ["gate"] and gate.log[0].risk is None
    # Two ticks later the plan should have moved on by two steps; this one jumps back by 0.5 rad.
    jump = chunk.copy()
    jump[:, 0] += 0.5
    r = gate.tick({}, lambda n: jump)
    assert r.actor == "hold" and len(op.reviewed) == 1
    assert gate.log[-1].decision == "veto" and gate.log[-1].risk == pytest.approx(0.5, abs=1e-6)
    assert "risk 0.500 >= 0.100" in op.reviewed[0].why[0]


def test_clamped_chunk_is_escalated_with_its_reasons(env):
    op = ScriptedOperator([Decision.APPROVE])
    gate = _gate(env, op, risk=RiskConfig(kind="none"))
    chunk = _ramp(env)
    chunk[:, -1] = 1.5
    gate.tick({}, lambda n: chunk)
    assert op.reviewed[0].why == ["safety clamped gripper_range x2"]
    assert gate.stats.clamps == {"gripper_range": 2}


def test_operator_steps_in_on_its_own(env):
    gate = _gate(env, ScriptedOperator([], drive_ticks=1, watch_at=1), escalate="never")
    actors = [gate.tick({}, lambda n: _ramp(env)).actor for _ in range(4)]
    assert actors == ["policy", "operator", "policy", "policy"]
    assert [r.decision for r in gate.log] == ["approve", "takeover", "handback", "approve"]


def test_n_action_steps_config_overrides_the_policy(env):
    gate = SupervisionGate(GateConfig(n_action_steps=1), env, None, n_action_steps=3)
    gate.reset()
    calls = []
    for _ in range(3):
        gate.tick({}, lambda n: calls.append(n) or _ramp(env))
    assert len(calls) == 3


def test_auto_operator_runs_the_expert_to_success(env):
    gate = SupervisionGate(GateConfig(), env, None, risk_kind="consistency", n_action_steps=1)
    log, _ = run_episode(ExpertPolicy(env), env, gate, seed=100_000)
    assert log.success and log.takeovers == 0 and log.vetoes == 0 and not log.clamps
    assert log.policy_steps == log.steps and len(log.decisions) == log.steps


def test_sample_disagreement_drives_escalation(env):
    op = ScriptedOperator([Decision.APPROVE] * 200)
    cfg = dict(risk=RiskConfig(kind="samples", n_samples=4, sample_threshold=0.1))
    calm = SupervisionGate(GateConfig(**cfg), env, op, risk_kind="samples", n_action_steps=1)
    log, _ = run_episode(NoisySamplerPolicy(env, noise=0.01), env, calm, seed=100_000)
    assert log.success and not op.reviewed and all(0 < r < 0.1 for r in log.risks)
    shaky = SupervisionGate(GateConfig(**cfg), env, op, risk_kind="samples", n_action_steps=1)
    log, _ = run_episode(NoisySamplerPolicy(env, noise=0.3), env, shaky, seed=100_000)
    assert len(op.reviewed) == log.steps and min(log.risks) > 0.1
