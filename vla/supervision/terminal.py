"""A person at the keyboard as the gate's operator; plain terminal I/O, so it works over ``ssh -t``.

The terminal is put in cbreak mode (keys arrive one by one, no echo) rather than full raw mode, so
Ctrl-C still interrupts and newlines still render; the saved settings are restored on ``close()``,
at interpreter exit, and by the evaluation's ``finally``. Keys:

* when the gate escalates a chunk: ``a`` approve, ``v`` veto (hold and re-query), ``t`` take over,
  ``q`` abort (safe stop);
* while the policy drives: ``t`` take over, ``q`` abort;
* while you drive: ``i``/``k`` hand +x/-x, ``j``/``l`` +y/-y, ``u``/``o`` up/down (``jog_step`` metres
  per press, solved to joint targets by inverse kinematics with the orientation kept), ``g`` toggle
  the gripper, ``h`` hand back to the policy, ``q`` abort;
* ``space``: emergency stop, at any time.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from envs.kinematics import InverseKinematics
from envs.robots import PREFIX
from vla.supervision.config import TerminalOperatorConfig
from vla.supervision.operators import Decision, Operator, Proposal, TickInfo, Verdict

if TYPE_CHECKING:
    from envs.tabletop import TabletopEnv

ESTOP = " "
REVIEW_KEYS = {"a": Decision.APPROVE, "v": Decision.VETO, "t": Decision.TAKEOVER, "q": Decision.ABORT}
JOG = {"i": (0, 1.0), "k": (0, -1.0), "j": (1, 1.0), "l": (1, -1.0), "u": (2, 1.0), "o": (2, -1.0)}
REVIEW_HELP = "[a] approve  [v] veto  [t] take over  [q] abort  [space] emergency stop"
DRIVE_HELP = ("you drive: [i/k] x+/-  [j/l] y+/-  [u/o] up/down  [g] gripper  [h] hand back  [q] abort  "
              "[space] emergency stop")


def _gripper_word(state: float) -> str:
    return "closed" if state >= 0.5 else "open"


class TerminalOperator(Operator):
    name = "terminal"

    def __init__(
        self,
        cfg: TerminalOperatorConfig,
        fd_in: int | None = None,
        fd_out: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.fd_in = sys.stdin.fileno() if fd_in is None else fd_in
        self.fd_out = sys.stdout.fileno() if fd_out is None else fd_out
        if not os.isatty(self.fd_in):
            raise ValueError("gate=terminal needs an interactive terminal on stdin (it is not a tty): run it "
                             "in a terminal, over SSH with `ssh -t`, or use gate=simulated / gate=auto")
        self.clock = clock
        self._saved: list | None = None
        self._keys: deque[str] = deque()

    # ------------------------------------------------------------------------ terminal state
    def _enter(self) -> None:
        if self._saved is None:
            self._saved = termios.tcgetattr(self.fd_in)
            # TCSANOW: keys typed before the prompt stay queued (TCSAFLUSH would drop them).
            tty.setcbreak(self.fd_in, termios.TCSANOW)
            atexit.register(self.close)

    def close(self) -> None:
        if self._saved is not None:
            saved, self._saved = self._saved, None
            atexit.unregister(self.close)
            # The terminal may be gone already (e.g. the SSH session closed): nothing left to restore.
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd_in, termios.TCSADRAIN, saved)

    def _say(self, text: str) -> None:
        os.write(self.fd_out, (text + "\n").encode())

    def _next_key(self, timeout: float | None) -> str | None:
        """One key, waiting up to ``timeout`` seconds (None: forever; 0: only what is queued)."""
        if not self._keys:
            ready, _, _ = select.select([self.fd_in], [], [], timeout)
            if ready:
                data = os.read(self.fd_in, 64)
                if not data:
                    raise EOFError("the terminal closed while the operator was waiting for a key")
                self._keys.extend(data.decode(errors="replace"))
        return self._keys.popleft() if self._keys else None

    # ------------------------------------------------------------------------ operator
    def reset(self, env: TabletopEnv) -> None:
        super().reset(env)
        self._enter()
        self._keys.clear()
        self.ik = InverseKinematics(env.model, env.robot, PREFIX)
        instruction = env.episode.instruction if env.episode is not None else ""
        self._say(f"\n=== new episode: {instruction!r} ({env.task.name}, {env.max_steps} steps max); "
                  "[t] take over, [q] abort, [space] emergency stop at any time")

    def review(self, proposal: Proposal, tick: TickInfo) -> Verdict:
        ee = proposal.ee_targets
        grip = proposal.actions[:, -1]
        path = (f"hand ({', '.join(f'{v:.3f}' for v in ee[0])}) -> ({', '.join(f'{v:.3f}' for v in ee[-1])}) m"
                if len(ee) else "hand path n/a")
        self._say(f"[step {proposal.step}] the gate asks you: {'; '.join(proposal.why)}\n"
                  f"  policy proposes {len(proposal.actions)} action(s): {path}, gripper "
                  f"{_gripper_word(grip[0])} -> {_gripper_word(grip[-1])}; {proposal.risk.describe()}\n"
                  f"  {REVIEW_HELP}")
        deadline = self.clock() + self.cfg.review_timeout_s if self.cfg.review_timeout_s > 0 else None
        while True:
            wait = None if deadline is None else max(0.0, deadline - self.clock())
            key = self._next_key(wait)
            if key is None:
                if deadline is not None and self.clock() >= deadline:
                    decision = Decision(self.cfg.timeout_decision)
                    self._say(f"  no answer in {self.cfg.review_timeout_s:g} s: {decision}")
                    return Verdict(decision, f"no answer within {self.cfg.review_timeout_s:g} s")
                continue
            if key == ESTOP:
                return self._estop()
            if key.lower() in REVIEW_KEYS:
                decision = REVIEW_KEYS[key.lower()]
                self._say(f"  -> {decision}")
                return Verdict(decision, f"operator pressed {key!r}")

    def watch(self, tick: TickInfo) -> Verdict | None:
        while (key := self._next_key(0)) is not None:
            if key == ESTOP:
                return self._estop()
            if key.lower() == "t":
                return Verdict(Decision.TAKEOVER, "operator pressed 't' while the policy drove")
            if key.lower() == "q":
                self._say("  -> abort")
                return Verdict(Decision.ABORT, "operator pressed 'q' while the policy drove")
        return None

    def take_control(self, tick: TickInfo, reason: str) -> None:
        self._target = self.env.ee_pos()
        self._rot = self.env.ee_rot()
        self._gripper = float(np.clip(tick.last_command[-1], 0.0, 1.0))
        self._say(f"[step {tick.step}] {DRIVE_HELP}")

    def act(self, tick: TickInfo) -> np.ndarray | Verdict:
        key = self._next_key(self.cfg.tick_wait_s)
        while key is not None:
            k = key.lower()
            if key == ESTOP:
                return self._estop()
            if k == "h":
                self._say("  -> hand back to the policy")
                return Verdict(Decision.HANDBACK, "operator pressed 'h'")
            if k == "q":
                self._say("  -> abort")
                return Verdict(Decision.ABORT, "operator pressed 'q' while driving")
            if k in JOG:
                axis, sign = JOG[k]
                self._target[axis] += sign * self.cfg.jog_step
                self._target[2] = max(self._target[2], self.env.table_z)
            elif k == "g":
                self._gripper = 0.0 if self._gripper >= 0.5 else 1.0
            if k in JOG or k == "g":
                self._say(f"  hand target ({', '.join(f'{v:.3f}' for v in self._target)}) m, "
                          f"gripper {_gripper_word(self._gripper)}")
            key = self._next_key(0)
        q = self.ik.solve(self.env.data.qpos, self._target, self._rot)
        return np.append(q, self._gripper)

    def _estop(self) -> Verdict:
        self._say("  !! EMERGENCY STOP: holding position")
        return Verdict(Decision.ABORT, "emergency stop (space)")
