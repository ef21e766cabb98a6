"""Simulated operator: it rescues a deliberately bad policy, hands back, and leaves a good one alone."""

from __future__ import annotations

import numpy as np
import pytest
from standins import DropOncePolicy, ExpertPolicy, FrozenPolicy

from envs.config import EnvConfig, make_env
from envs.tasks import TASKS
from vla.eval.rollout import run_episode
from vla.supervision.config import GateConfig, OperatorConfig, RiskConfig, SimulatedOperatorConfig
from vla.supervision.gate import SupervisionGate
from vla.supervision.operators import SceneMonitor, SimulatedOperator, build_operator


def _run(policy_cls, task="pick_place", seed=100_000, max_steps=None, **sim):
    env = make_env(EnvConfig(task=task, cameras=[], max_steps=max_steps))
    cfg = GateConfig(operator=OperatorConfig(kind="simulated", simulated=SimulatedOperatorConfig(**sim)),
                     risk=RiskConfig(kind="none"))  # only the scene triggers act here
    gate = SupervisionGate(cfg, env, build_operator(cfg.operator), risk_kind="none", n_action_steps=1)
    try:
        log, _ = run_episode(policy_cls(env), env, gate, seed)
    finally:
        env.close()
    return log


@pytest.mark.parametrize("seed", [100_000, 100_001])
def test_dropped_cube_is_rescued_and_handed_back(seed):
    auto = GateConfig()
    env = make_env(EnvConfig(task="pick_place", cameras=[]))
    alone, _ = run_episode(DropOncePolicy(env), env, SupervisionGate(auto, env, None, n_action_steps=1), seed)
    env.close()
    assert not alone.success  # without help the bad policy fails

    log = _run(DropOncePolicy, seed=seed, max_steps=250)  # time enough: only the drop matters here
    assert log.success and log.takeovers == 1 and not log.aborted
    assert log.takeover_reasons[0].startswith("scene: dropped")
    kinds = [d["decision"] for d in log.decisions]
    handback = kinds.index("handback")
    assert "recovered: task stage 0 -> 1" in log.decisions[handback]["reason"]
    # The policy drove again after the hand-back and finished the task itself.
    assert kinds[handback + 1 :].count("approve") > 5
    assert 0 < log.operator_steps < log.steps and log.policy_steps + log.operator_steps == log.steps


def test_reaction_delay_and_no_progress_trigger():
    only = dict(task="pick_cube", triggers=["no_progress"])
    log = _run(FrozenPolicy, reaction_delay=3, no_progress_ticks=20, **only)
    assert log.takeover_steps[0] == 23 and log.takeover_reasons[0] == "scene: no_progress"
    log = _run(FrozenPolicy, reaction_delay=0, no_progress_ticks=10, **only)
    assert log.takeover_steps[0] == 10


def test_attention_budget_limits_takeovers():
    log = _run(FrozenPolicy, task="pick_cube", max_takeovers=0)
    assert log.takeovers == 0 and log.operator_steps == 0
    log = _run(FrozenPolicy, task="pick_cube", max_takeover_fraction=0.1)
    assert log.operator_steps <= 8  # 10% of pick_cube's 80 steps
    assert any("attention budget spent" in d["reason"] for d in log.decisions)


def test_time_running_out_takes_over_for_good():
    log = _run(FrozenPolicy, triggers=["time_running_out"], reaction_delay=0, max_takeover_fraction=1.0)
    assert log.takeover_reasons == ["scene: time_running_out"]
    # It fires with about twice the expert's straight-line estimate left: enough for the expert to finish, and
    # not much more than twice what it then needed. It never hands back.
    left = TASKS["pick_place"].max_steps - log.takeover_steps[0]
    assert log.success and log.operator_steps == log.steps - log.takeover_steps[0]
    assert log.operator_steps <= left <= 2 * log.operator_steps + 10
    assert "handback" not in [d["decision"] for d in log.decisions]


def test_closed_gripper_on_nothing_triggers():
    class ClosedGripper(FrozenPolicy):
        def reset(self) -> None:
            self.home = np.append(self.env.arm_qpos(), 1.0)

    log = _run(ClosedGripper, task="pick_cube", triggers=["empty_grasp"], empty_grasp_ticks=5, reaction_delay=0)
    assert log.takeover_reasons[0] == "scene: empty_grasp" and log.takeover_steps[0] <= 8


def test_knocked_away_cube_triggers():
    env = make_env(EnvConfig(task="pick_cube", cameras=[]))
    env.reset(seed=1)
    monitor = SceneMonitor(SimulatedOperatorConfig())
    monitor.restart(env, 0)
    assert "knocked_away" not in monitor.update(env, 1, env.max_steps, 0.35, 3)
    adr = env._cube_qadr[0]
    env.data.qpos[adr] += 0.05  # something shoved the cube 5 cm
    import mujoco

    mujoco.mj_forward(env.model, env.data)
    assert "knocked_away" in monitor.update(env, 2, env.max_steps, 0.35, 3)
    env.close()


@pytest.mark.parametrize("task", ["pick_cube", "pick_place", "stack"])
def test_no_false_alarms_on_a_good_policy(task):
    for seed in (100_000, 100_001):
        log = _run(ExpertPolicy, task=task, seed=seed)
        assert log.success and log.takeovers == 0, log.takeover_reasons


def test_high_risk_is_vetoed_then_taken_over():
    op = SimulatedOperator(SimulatedOperatorConfig(max_vetoes=2))
    env = make_env(EnvConfig(task="pick_cube", cameras=[]))
    cfg = GateConfig(risk=RiskConfig(kind="consistency", consistency_threshold=0.05))
    gate = SupervisionGate(cfg, env, op, risk_kind="consistency", n_action_steps=1)
    env.reset(seed=0)
    gate.reset()
    base = np.append(env.arm_qpos(), 0.0)

    calls = []

    def flip(n):  # alternates between two plans: never consistent
        calls.append(n)
        chunk = np.repeat(base[None], 4, axis=0)
        chunk[:, 5] += 0.2 * (len(calls) % 2)
        return chunk

    actors = [gate.tick({}, flip).actor for _ in range(5)]
    assert actors[:4] == ["policy", "hold", "hold", "operator"]
    assert [d.decision for d in gate.log[:4]] == ["approve", "veto", "veto", "takeover"]
    assert "after 2 vetoes" in gate.log[3].reason
    env.close()
