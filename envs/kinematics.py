"""Damped least-squares inverse kinematics on the robot's own MuJoCo model.

Solves on a scratch MjData so the simulation is never disturbed. Targets are an end-effector
position and, optionally, a top-down tool orientation with a yaw about the vertical; on arms with
fewer than six joints the orientation rows are down-weighted so position wins.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.robots import RobotSpec


def top_down_rotation(yaw: float) -> np.ndarray:
    """Rotation whose z axis points down and whose x axis points along ``yaw`` in the table plane."""
    c, s = np.cos(yaw), np.sin(yaw)
    x = np.array([c, s, 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Axis-angle-like error (world frame) that rotates ``current`` toward ``target``."""
    return 0.5 * sum(np.cross(current[:, i], target[:, i]) for i in range(3))


class InverseKinematics:
    def __init__(self, model: mujoco.MjModel, robot: RobotSpec, prefix: str) -> None:
        self.model = model
        self.robot = robot
        self.scratch = mujoco.MjData(model)
        self.site = model.site(prefix + robot.ee_site).id
        joints = [model.joint(prefix + j) for j in robot.arm_joints]
        self.qadr = np.array([int(j.qposadr[0]) for j in joints])
        self.dadr = np.array([int(j.dofadr[0]) for j in joints])
        self.lower = np.array([j.range[0] for j in joints])
        self.upper = np.array([j.range[1] for j in joints])
        # A 5-joint arm whose wrist roll turns about the tool axis reaches a top-down pose at any yaw
        # exactly, but only where its wrist can still point straight down; past that, a light
        # orientation weight keeps the tool on target, a little tilted, instead of vertical and short.
        self.rot_weight = 0.5 if robot.n_arm >= 6 else 0.05
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, qpos_full: np.ndarray, arm_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector position and rotation for the arm joints ``arm_q`` (others from ``qpos_full``)."""
        d = self.scratch
        d.qpos[:] = qpos_full
        d.qpos[self.qadr] = arm_q
        mujoco.mj_kinematics(self.model, d)
        return d.site_xpos[self.site].copy(), d.site_xmat[self.site].reshape(3, 3).copy()

    def solve(
        self,
        qpos_full: np.ndarray,
        target_pos: np.ndarray,
        target_rot: np.ndarray | None,
        iterations: int = 30,
        damping: float = 0.03,
        tolerance: float = 5e-4,
    ) -> np.ndarray:
        """Arm joint positions reaching the target, starting from the current configuration."""
        d = self.scratch
        d.qpos[:] = qpos_full
        q = qpos_full[self.qadr].copy()
        for _ in range(iterations):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(self.model, d)
            mujoco.mj_comPos(self.model, d)
            pos_err = target_pos - d.site_xpos[self.site]
            rows = [pos_err]
            mujoco.mj_jacSite(self.model, d, self._jacp, self._jacr, self.site)
            jac = [self._jacp[:, self.dadr]]
            if target_rot is not None:
                rot_err = rotation_error(d.site_xmat[self.site].reshape(3, 3), target_rot)
                rows.append(self.rot_weight * rot_err)
                jac.append(self.rot_weight * self._jacr[:, self.dadr])
            err = np.concatenate(rows)
            if np.linalg.norm(err) < tolerance:
                break
            j = np.concatenate(jac)
            # A joint resting on a limit that the error pushes further out contributes nothing but
            # a clipped step; leaving it out lets the other joints take over instead of stalling.
            push = j.T @ err
            free = ~(((q <= self.lower + 1e-6) & (push < 0)) | ((q >= self.upper - 1e-6) & (push > 0)))
            j = j * free
            dq = j.T @ np.linalg.solve(j @ j.T + damping**2 * np.eye(j.shape[0]), err)
            # Cap each step so a far target cannot fling the arm through a singularity.
            dq *= min(1.0, 0.4 / (np.abs(dq).max() + 1e-9))
            q = np.clip(q + dq, self.lower, self.upper)
        return q
