"""Terminal operator driven through a pseudo-terminal with scripted keys, as a person over SSH would."""

from __future__ import annotations

import os
import termios
import threading
import time

import numpy as np
import pytest
from standins import ExpertPolicy

from envs.tabletop import TabletopEnv
from vla.eval.rollout import run_episode
from vla.supervision.config import GateConfig, TerminalOperatorConfig
from vla.supervision.gate import SupervisionGate
from vla.supervision.terminal import REVIEW_HELP, TerminalOperator

PROMPT = REVIEW_HELP.encode()


class Pty:
    """The person's side of a pseudo-terminal: reads everything shown, types keys."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.out = b""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.out += data

    def expect(self, marker: bytes, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.out.count(marker) >= count:
                    return
            time.sleep(0.01)
        raise AssertionError(f"never saw {marker!r} x{count}; the terminal shows:\n{self.out.decode(errors='replace')}")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        # Slave first: the reader's read of the master then fails (EIO) and the thread ends. Closing the master
        # under a live reader would let it read whatever file next gets that descriptor number, e.g. another
        # test's pipe, and swallow its data.
        os.close(self.slave)
        self._reader.join(timeout=5.0)
        os.close(self.master)


@pytest.fixture
def pty_():
    p = Pty()
    yield p
    p.close()


@pytest.fixture
def env():
    e = TabletopEnv(task="pick_cube", cameras=())
    yield e
    e.close()


def _in_background(fn):
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # surfaced by the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_keys_approve_veto_takeover_jog_handback_abort_and_estop(pty_, env):
    before = termios.tcgetattr(pty_.slave)
    op = TerminalOperator(TerminalOperatorConfig(jog_step=0.02, tick_wait_s=0.05), fd_in=pty_.slave,
                          fd_out=pty_.slave)
    sent: list[np.ndarray] = []
    at_takeover: list[np.ndarray] = []
    act, take = op.act, op.take_control
    op.act = lambda tick: (out := act(tick), sent.append(out))[0]
    op.take_control = lambda tick, reason: (at_takeover.append(env.ee_pos()), take(tick, reason))[1]
    gate = SupervisionGate(GateConfig(escalate="always"), env, op, risk_kind="none", n_action_steps=1)
    policy = ExpertPolicy(env)
    thread, box = _in_background(lambda: [run_episode(policy, env, gate, seed) for seed in (100_000, 100_001)])

    pty_.expect(b"new episode")
    mode = termios.tcgetattr(pty_.slave)
    assert not mode[3] & (termios.ICANON | termios.ECHO)  # single keys, no echo
    pty_.expect(PROMPT, 1)
    pty_.type("a")
    pty_.expect(PROMPT, 2)
    pty_.type("v")
    pty_.expect(PROMPT, 3)
    pty_.type("t")
    pty_.expect(b"you drive")
    pty_.type("u")  # jog the hand up
    pty_.expect(b"hand target")
    pty_.type("h")
    pty_.expect(PROMPT, 4)
    pty_.type("q")
    pty_.expect(b"new episode", 2)
    pty_.expect(PROMPT, 5)
    pty_.type(" ")
    thread.join(timeout=30)
    assert not thread.is_alive() and "error" not in box, box.get("error")
    (first, _), (second, _) = box["result"]

    decisions = [(d["decision"], d["actor"]) for d in first.decisions]
    assert decisions == [("approve", "terminal"), ("veto", "terminal"), ("takeover", "terminal"),
                         ("handback", "terminal"), ("abort", "terminal")]
    assert first.aborted and first.takeovers == 1 and first.vetoes == 1 and first.operator_steps >= 1
    assert all(d["time"] > 0 and d["reason"] for d in first.decisions)
    # The jogged command lifts the hand by one jog step from where it was at the takeover.
    jogged = [a for a in sent if isinstance(a, np.ndarray)][-1]
    z = gate.safety.forward(jogged[:6])[0][2]
    assert z == pytest.approx(at_takeover[0][2] + 0.02, abs=3e-3)
    assert second.aborted and second.steps == 0 and second.abort_reason == "emergency stop (space)"
    # The pty reader thread may not have read the last lines yet when the episode thread ends: wait for them.
    pty_.expect(b"EMERGENCY STOP")
    pty_.expect(b"gate asks you")

    op.close()
    assert termios.tcgetattr(pty_.slave) == before  # the terminal is restored


def test_takeover_and_estop_while_the_policy_drives(pty_, env):
    op = TerminalOperator(TerminalOperatorConfig(tick_wait_s=0.05), fd_in=pty_.slave, fd_out=pty_.slave)
    gate = SupervisionGate(GateConfig(escalate="never"), env, op, risk_kind="none", n_action_steps=1)
    # Slow the policy down so the keys arrive while it drives.
    policy = ExpertPolicy(env)
    predict = policy.predict_chunk
    policy.predict_chunk = lambda batch, **kw: (time.sleep(0.02), predict(batch, **kw))[1]
    thread, box = _in_background(lambda: run_episode(policy, env, gate, 100_000))
    pty_.expect(b"new episode")
    pty_.type("t")
    pty_.expect(b"you drive")
    pty_.type(" ")
    thread.join(timeout=30)
    log, _ = box["result"]
    assert [d["decision"] for d in log.decisions if d["decision"] != "approve"] == ["takeover", "abort"]
    assert log.abort_reason == "emergency stop (space)" and log.aborted
    op.close()


def test_unanswered_review_times_out(pty_, env):
    cfg = TerminalOperatorConfig(review_timeout_s=0.2, timeout_decision="veto")
    op = TerminalOperator(cfg, fd_in=pty_.slave, fd_out=pty_.slave)
    gate = SupervisionGate(GateConfig(escalate="always"), env, op, risk_kind="none", n_action_steps=1)
    env.reset(seed=0)
    gate.reset()
    start = time.monotonic()
    result = gate.tick({}, lambda n: np.append(env.arm_qpos(), 0.0)[None].repeat(2, axis=0))
    assert result.actor == "hold" and 0.15 < time.monotonic() - start < 5
    assert gate.log[-1].decision == "veto" and "no answer within 0.2 s" in gate.log[-1].reason
    op.close()


def test_needs_a_terminal():
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="interactive terminal"):
            TerminalOperator(TerminalOperatorConfig(), fd_in=r, fd_out=w)
    finally:
        os.close(r)
        os.close(w)
