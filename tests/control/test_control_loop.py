"""The control loop against a fake robot: rate under slow inference, faults, e-stop, gate decisions."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from control_helpers import CountingPredictor, FakeRobot, ScriptedGate, ramp_predictor

from vla.supervision.control_loop import ControlConfig, ControlLoop, check_chunk, summarize


def run(robot, predictor, steps=30, gate=None, **cfg):  # 50 Hz unless the test says otherwise
    loop = ControlLoop(robot, predictor, ControlConfig(**{"hz": 50.0, **cfg}), gate=gate)
    try:
        return loop.run_episode(max_steps=steps)
    finally:
        loop.close()


def test_async_keeps_the_rate_when_inference_is_slower_than_a_tick():
    # 20 Hz (50 ms ticks) with 120 ms inference: blocking would stall every few ticks.
    robot = FakeRobot()
    rep = run(robot, ramp_predictor(latency_s=0.12), steps=40, hz=20.0, async_inference=True)
    assert rep.stop_reason == "max_steps" and rep.steps == 40
    assert rep.deadline_miss_rate <= 0.05
    assert rep.achieved_hz == pytest.approx(20.0, rel=0.1)
    assert np.median(rep.latencies_s) >= 0.12
    # No stall: after the first chunk arrives the queue never runs dry (the lead grows with latency).
    assert rep.actors["hold"] == 0 and rep.chunks >= 4 and not rep.faults
    q = np.stack(robot.sent)[:, 0]
    assert np.all(np.diff(q) > 0)  # the arm moves forward on every tick


def test_blocking_inference_misses_deadlines_and_reports_them():
    rep = run(FakeRobot(), ramp_predictor(latency_s=0.12), steps=20, hz=20.0, async_inference=False,
              execute_steps=4)
    assert rep.deadline_misses >= 3  # one per chunk: every 4th tick blocks for 120 ms > 50 ms
    assert rep.achieved_hz < 18.0
    assert summarize([rep])["deadline_miss_pct"] == pytest.approx(100 * rep.deadline_misses / rep.steps)


@pytest.mark.parametrize("mode", ["raise", "nan", "shape"])
def test_a_failing_policy_holds_position_and_stops_cleanly(mode):
    robot = FakeRobot()
    predictor = CountingPredictor(ramp_predictor(), mode)  # every call misbehaves
    rep = run(robot, predictor, steps=100, max_consecutive_faults=5)
    kind = {"raise": "policy_error", "nan": "nan", "shape": "bad_shape"}[mode]
    assert rep.stop_reason == "faults" and rep.faults[kind] >= 1
    assert robot.stopped == 1
    assert all(np.array_equal(a, np.zeros(4)) for a in robot.sent)  # never moved: only holds were sent
    assert rep.actors["hold"] == len(robot.sent) - 1  # the last one is the safe stop


@pytest.mark.parametrize("mode", ["raise", "nan", "shape"])
def test_an_intermittently_failing_policy_keeps_going(mode):
    robot = FakeRobot()
    predictor = CountingPredictor(ramp_predictor(), mode, bad_calls={1, 3})
    rep = run(robot, predictor, steps=40, execute_steps=2)
    assert rep.stop_reason == "max_steps" and rep.steps == 40
    assert sum(rep.faults.values()) == 2
    assert robot.sent[-1][0] > 0.1  # it kept following the good chunks
    for a in robot.sent:
        assert np.all(np.isfinite(a))


def test_inference_timeout_holds_and_recovers():
    robot = FakeRobot()
    predictor = CountingPredictor(ramp_predictor(), "slow", bad_calls={1}, delay_s=0.3)
    rep = run(robot, predictor, steps=50, inference_timeout_s=0.1, execute_steps=2)
    assert rep.faults["timeout"] == 1 and rep.stop_reason == "max_steps"
    assert rep.actors["hold"] >= 1 and robot.sent[-1][0] > robot.sent[10][0]


def test_a_hung_policy_stops_the_episode():
    robot = FakeRobot()
    predictor = CountingPredictor(ramp_predictor(), "slow", bad_calls=None, delay_s=2.0)
    rep = run(robot, predictor, steps=200, inference_timeout_s=0.05, max_consecutive_faults=10)
    assert rep.stop_reason == "faults" and rep.faults["timeout"] == 1 and robot.stopped == 1


def test_robot_read_failure_holds_then_continues():
    robot = FakeRobot(fail_reads={10, 11, 12})
    rep = run(robot, ramp_predictor(), steps=30)
    assert rep.faults["read"] == 3 and rep.stop_reason == "max_steps"
    sent = np.stack(robot.sent)
    # ticks 10..12 (read indices = ticks here) re-send the last accepted target instead of the plan
    np.testing.assert_array_equal(sent[10], sent[9])
    np.testing.assert_array_equal(sent[12], sent[9])
    assert sent[-1][0] > sent[12][0] + 0.1  # and it moves on once the robot reads again


def test_persistent_read_failure_stops_safely():
    robot = FakeRobot(fail_reads=set(range(5, 1000)))
    rep = run(robot, ramp_predictor(), steps=100, max_consecutive_faults=4)
    assert rep.stop_reason == "faults" and robot.stopped == 1


def test_estop_from_another_thread():
    robot = FakeRobot()
    loop = ControlLoop(robot, ramp_predictor(), ControlConfig(hz=50.0))
    timer = threading.Timer(0.2, loop.estop)
    timer.start()
    try:
        rep = loop.run_episode(max_steps=10_000)
    finally:
        timer.cancel()
        loop.close()
    assert rep.stop_reason == "estop" and robot.stopped == 1
    assert 3 <= rep.steps <= 30


def test_gate_veto_takeover_and_abort():
    robot = FakeRobot()
    gate = ScriptedGate(["approve", "veto", "takeover", "approve", "abort"], operator_ticks=3)
    rep = run(robot, ramp_predictor(), steps=200, gate=gate)
    assert rep.stop_reason == "abort" and robot.stopped == 1
    assert rep.decisions == {"approve": 2, "veto": 1, "takeover": 1, "abort": 1}
    assert rep.takeovers == 1 and rep.actors["operator"] == 3
    grip = np.stack(robot.sent)[:, -1]
    closed = np.flatnonzero(grip == 1.0)
    # The operator's 3 ticks close the gripper (the last one is repeated by the safe stop at the end).
    assert list(closed[:3]) == [closed[0], closed[0] + 1, closed[0] + 2]


def test_check_chunk():
    assert check_chunk(np.zeros((1, 5, 3)), 3).shape == (5, 3)
    with pytest.raises(ValueError, match="shape"):
        check_chunk(np.zeros((5, 2)), 3)
    with pytest.raises(ValueError, match="NaN"):
        check_chunk(np.array([[0.0, np.inf, 0.0]]), 3)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"control\.hz"):
        ControlConfig(hz=0)
    with pytest.raises(ValueError, match=r"control\.blend"):
        ControlConfig(blend="mean")
