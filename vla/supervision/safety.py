"""Hard safety limits on action chunks, checked before anything reaches the robot.

Per action, in order: shape and NaN/inf (reject the whole chunk), gripper range, joint limits, the
largest joint change per control tick (relative to the previous action, starting from the last
command sent), then the end-effector target through MuJoCo forward kinematics: inside the workspace
box and, together with the lowest point of every colliding finger geom, above the table. A Cartesian
violation is projected back by inverse kinematics (target moved into the box / lifted by the
missing height, orientation kept); if that cannot be done within one tick's joint change, the chunk
is rejected. Every clamp is counted per action with its reason; a rejected chunk holds position.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from envs.kinematics import InverseKinematics
from envs.robots import PREFIX
from vla.supervision.config import SafetyConfig

if TYPE_CHECKING:
    from envs.tabletop import TabletopEnv

# Reasons, as counted in the reports.
NON_FINITE, BAD_SHAPE, UNREACHABLE = "non_finite", "bad_shape", "unreachable"
GRIPPER_RANGE, JOINT_LIMIT, JOINT_STEP = "gripper_range", "joint_limit", "joint_step"
WORKSPACE, BELOW_TABLE = "workspace", "below_table"
CLAMP_REASONS = (GRIPPER_RANGE, JOINT_LIMIT, JOINT_STEP, WORKSPACE, BELOW_TABLE)
REJECT_REASONS = (NON_FINITE, BAD_SHAPE, UNREACHABLE)
_SLACK = 1e-3  # metres the IK projection may miss by (its own tolerance is 0.5 mm)
_BOX_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)


@dataclass
class FilterResult:
    actions: np.ndarray  # (n, A) safe actions; the hold action repeated when rejected
    rejected: bool = False
    reason: str | None = None  # why the chunk was rejected
    clamps: Counter[str] = field(default_factory=Counter)  # reason -> actions clamped for it
    ee_targets: np.ndarray | None = None  # (n, 3) end-effector position of each safe target

    @property
    def clamped(self) -> bool:
        return sum(self.clamps.values()) > 0


class SafetyFilter:
    def __init__(self, env: TabletopEnv, cfg: SafetyConfig) -> None:
        self.env, self.cfg = env, cfg
        self.n_arm = env.robot.n_arm
        self.action_dim = self.n_arm + 1
        limits = env.joint_limits
        self.q_low = limits[:, 0] + cfg.joint_margin
        self.q_high = limits[:, 1] - cfg.joint_margin
        if np.any(self.q_low >= self.q_high):
            raise ValueError(f"gate.safety.joint_margin={cfg.joint_margin} rad closes a joint range "
                             f"{limits.tolist()}; use a smaller margin")
        self.max_step = cfg.max_joint_speed / env.control_hz
        self.table_z = env.table_z
        self.ws_low, self.ws_high = self._workspace()
        self.ik = InverseKinematics(env.model, env.robot, PREFIX)
        m = env.model
        fingers = {m.body(PREFIX + b).id for b in env.robot.finger_bodies}
        self._finger_geoms = np.array([
            g for g in range(m.ngeom)
            if m.geom_bodyid[g] in fingers and (m.geom_contype[g] or m.geom_conaffinity[g])
        ], dtype=int)
        # Each geom's bounding box in its own frame: exact for boxes, conservative for meshes.
        aabb = m.geom_aabb[self._finger_geoms]
        self._corners = aabb[:, None, :3] + _BOX_CORNERS[None] * aabb[:, None, 3:]

    def _workspace(self) -> tuple[np.ndarray, np.ndarray]:
        cfg, env = self.cfg, self.env
        if cfg.workspace_low is not None and cfg.workspace_high is not None:
            return np.asarray(cfg.workspace_low, float), np.asarray(cfg.workspace_high, float)
        m = cfg.workspace_margin
        low = np.array([env.reach_x[0] - m, env.reach_y[0] - m, self.table_z + cfg.table_clearance])
        high = np.array([env.reach_x[1] + m, env.reach_y[1] + m, self.table_z + cfg.workspace_height])
        return low, high

    # ------------------------------------------------------------------ geometry
    def forward(self, arm_q: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """End-effector position and rotation for ``arm_q``, and the lowest fingertip height."""
        pos, rot = self.ik.forward(self.env.data.qpos, arm_q)
        if not self.cfg.check_fingertips or self._finger_geoms.size == 0:
            return pos, rot, float("inf")
        d = self.ik.scratch
        xmat = d.geom_xmat[self._finger_geoms].reshape(-1, 3, 3)
        world = d.geom_xpos[self._finger_geoms][:, None, :] + np.einsum("gij,gkj->gki", xmat, self._corners)
        return pos, rot, float(world[..., 2].min())

    def _cartesian_violation(self, pos: np.ndarray, tip_z: float) -> tuple[np.ndarray, list[str]]:
        """The corrected target position and the reasons it had to move (empty: fine)."""
        low, high = self.ws_low, self.ws_high
        floor = self.table_z + self.cfg.table_clearance
        reasons = []
        if np.any(pos[:2] < low[:2]) or np.any(pos[:2] > high[:2]) or pos[2] > high[2]:
            reasons.append(WORKSPACE)
        if pos[2] < low[2] or tip_z < floor:
            reasons.append(BELOW_TABLE)
        target = np.clip(pos, low, high)
        if tip_z < floor:  # lift the whole hand by what the fingertips lack
            target[2] = min(max(target[2], pos[2] + floor - tip_z), high[2])
        return target, reasons

    def _check(self, arm_q: np.ndarray) -> tuple[np.ndarray, bool]:
        """End-effector position of ``arm_q`` and whether it is inside the safe region."""
        pos, _, tip_z = self.forward(arm_q)
        floor = self.table_z + self.cfg.table_clearance
        inside = np.all(pos >= self.ws_low - _SLACK) and np.all(pos <= self.ws_high + _SLACK)
        return pos, bool(inside and tip_z >= floor - _SLACK)

    # ------------------------------------------------------------------ filtering
    def hold(self, previous: np.ndarray, n: int = 1) -> np.ndarray:
        """``n`` copies of the last command: the robot keeps its targets (and its grip)."""
        return np.repeat(np.asarray(previous, float)[None], n, axis=0)

    def _reject(self, previous: np.ndarray, n: int, reason: str) -> FilterResult:
        pos = self.forward(np.asarray(previous, float)[: self.n_arm])[0]
        return FilterResult(self.hold(previous, n), True, reason, Counter(), np.repeat(pos[None], n, axis=0))

    def filter(self, actions: np.ndarray, previous: np.ndarray) -> FilterResult:
        """Filter ``actions`` (n, A) or (A,); ``previous`` is the last command sent to the robot."""
        a = np.array(actions, dtype=float, copy=True)
        if a.ndim == 1:
            a = a[None]
        previous = np.asarray(previous, dtype=float)
        n = a.shape[0] if a.ndim == 2 and a.shape[0] > 0 else 1
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] != self.action_dim:
            return self._reject(previous, n, BAD_SHAPE)
        if not np.all(np.isfinite(a)):
            return self._reject(previous, n, NON_FINITE)
        clamps: Counter[str] = Counter()
        ee = np.zeros((n, 3))
        prev = previous
        for i in range(n):
            act, reasons, ee[i] = self._filter_one(a[i], prev)
            if act is None:
                return self._reject(previous, n, UNREACHABLE)
            clamps.update(reasons)
            a[i], prev = act, act
        return FilterResult(a, False, None, clamps, ee)

    def _filter_one(self, action: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray | None, set[str], np.ndarray]:
        """The safe action (None: cannot be made safe), the clamp reasons and its end-effector position."""
        reasons: set[str] = set()
        act = action.copy()
        grip = np.clip(act[self.n_arm :], 0.0, 1.0)
        if np.any(grip != act[self.n_arm :]):
            reasons.add(GRIPPER_RANGE)
            act[self.n_arm :] = grip
        q = self._limit(act[: self.n_arm], prev[: self.n_arm], reasons)
        pos, rot, tip_z = self.forward(q)
        target, cart = self._cartesian_violation(pos, tip_z)
        if cart:
            reasons.update(cart)
            q = self.ik.solve(self._qpos_with(q), target, rot)
            q = self._limit(q, prev[: self.n_arm], reasons)
            pos, safe = self._check(q)
            if not safe:
                return None, reasons, pos
        act[: self.n_arm] = q
        return act, reasons, pos

    def _qpos_with(self, arm_q: np.ndarray) -> np.ndarray:
        qpos = self.env.data.qpos.copy()
        qpos[self.ik.qadr] = arm_q
        return qpos

    def _limit(self, q: np.ndarray, prev_q: np.ndarray, reasons: set[str]) -> np.ndarray:
        limited = np.clip(q, self.q_low, self.q_high)
        if np.any(limited != q):
            reasons.add(JOINT_LIMIT)
        # Limits win over the step bound: a previous command outside them is not followed further out.
        stepped = np.clip(np.clip(limited, prev_q - self.max_step, prev_q + self.max_step), self.q_low, self.q_high)
        if np.any(np.abs(stepped - limited) > 1e-12):
            reasons.add(JOINT_STEP)
        return stepped
