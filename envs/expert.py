"""Closed-loop scripted expert: Cartesian waypoints through inverse kinematics.

Every tick it re-reads the simulator (where the cube is, whether it is held, how open the gripper
is) and picks the phase from that, so it can take over mid-episode from wherever a policy left
the scene: a dropped cube is grasped again, a half-closed gripper is opened first. The only memory
is how long the gripper has been closing at the grasp pose.

``aim_offset`` makes a deliberately wrong expert: it aims its grasp that far (metres, in x and y) off the
cube, closes on air or on an edge, notices the miss and opens again. Demonstration collection runs one
beside the correct expert to put misses into the data while recording only the correct expert's
actions, so that a policy sees how to recover from a grasp that went wrong (vla/data/collect.py).

Phases: approach above the cube -> descend -> close -> lift -> carry above the place -> descend ->
open -> retreat. Motion is speed-limited in Cartesian space, so joint targets change smoothly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from envs.kinematics import InverseKinematics, top_down_rotation
from envs.robots import PREFIX

if TYPE_CHECKING:
    from envs.tabletop import TabletopEnv

CLOSE_TICKS = 3  # control ticks the jaws get to close before lifting
XY_TOL = 0.006
Z_TOL = 0.006
# Above the cube, the descent starts (and goes on) within this horizontal distance, correcting the rest on
# the way down: a stricter bound sends the hand back up to hover height whenever the arm's lag pushes it
# a few millimetres off, and demos that zig-zag up and down over the cube teach a policy to hover there.
DESCEND_XY_TOL = 0.015
# The same at the place: the carried cube is lowered once it is within this many cube half-widths of the
# place, and the rest of the offset is corrected on the way down. With XY_TOL here the arm's sideways lag
# during the lowering sent the cube back up to carry height several times per episode (place/carry
# zig-zags of up to 30 ticks over the pad), and a policy trained on them held the cube above the pad
# without letting go. Relative to the cube, since a stack must end within 0.8 half-widths of aligned.
PLACE_XY_TOL_HALVES = 0.5


def _yaw_of(quat: np.ndarray) -> float:
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class ScriptedExpert:
    def __init__(self, env: TabletopEnv, speed: float | None = None,
                 aim_offset: np.ndarray | tuple[float, float] | None = None) -> None:
        self.env = env
        self.ik = InverseKinematics(env.model, env.robot, PREFIX)
        self.speed = speed if speed is not None else env.robot.expert_speed
        self.aim_offset = np.zeros(3) if aim_offset is None else np.array([*np.asarray(aim_offset, float)[:2], 0.0])
        self.reset()

    def reset(self) -> None:
        self._closing = 0
        self._reopening = False  # a grasp at the grasp pose missed: open before closing again
        self._released = False
        self._phase = "start"

    @property
    def phase(self) -> str:
        return self._phase

    def act(self) -> np.ndarray:
        env = self.env
        assert env.episode is not None, "reset the environment before asking the expert"
        goal = env.task.expert_goal(env, env.episode)
        ee = env.ee_pos()
        cube = env.cube_pos(goal.cube)
        h = env.cube_half
        held = env.is_grasped(goal.cube)
        grasp_z = cube[2] + 0.25 * h
        hover = env.robot.hover_clearance + 2 * h
        # How far below the hover height the hand may move sideways; within the clearance, so
        # that a low hover still keeps the hand (and a carried cube) above the other cubes.
        slack = min(0.03, 0.5 * env.robot.hover_clearance)
        yaw = self._grasp_yaw(goal.cube)

        if goal.place is not None and self._at_place(cube, goal.place) and not held:
            self._released = True
        if self._released:
            # Released at the place: open fully and retreat straight up, once the jaws have let go
            # (moving while they still touch the cube would drag it off the place).
            if env.touches_gripper(goal.cube) and env.gripper_state() > 0.05:
                self._phase = "release"
                return self._move(ee, ee, None, gripper=0.0)
            self._phase = "retreat"
            return self._move(ee, np.array([ee[0], ee[1], goal.place[2] + hover]), yaw, gripper=0.0)

        if held and self._closing >= CLOSE_TICKS:
            if goal.place is None:
                self._phase = "lift"
                target = np.array([cube[0], cube[1], h + goal.lift_height + 0.02])
                return self._move(ee, target + (ee - cube) * [1, 1, 0], None, gripper=1.0)
            offset = ee - cube  # keep the grasp offset: move the cube, not the hand
            place_ee = goal.place + offset
            # Carry the cube with its bottom the hover clearance above the tops of cubes resting on
            # the table, and at least that clearance above its own place height (e.g. a stack).
            carry_z = max(goal.place[2] + env.robot.hover_clearance, h + hover)
            off_place = np.linalg.norm(cube[:2] - goal.place[:2])
            if off_place > PLACE_XY_TOL_HALVES * h:
                if ee[2] < carry_z - slack and off_place > 0.03:
                    self._phase = "lift"
                    return self._move(ee, np.array([ee[0], ee[1], carry_z]), None, gripper=1.0)
                self._phase = "carry"
                return self._move(ee, np.array([place_ee[0], place_ee[1], carry_z]), None, gripper=1.0)
            if cube[2] - goal.place[2] > 0.004:
                self._phase = "place"
                # As in the descent to a grasp: the speed limit applies to the drop only, the horizontal
                # offset (under PLACE_XY_TOL_HALVES) is commanded away in full every tick.
                drop = self._step_length(slow=True)
                return self._command(np.array([*place_ee[:2], max(place_ee[2], ee[2] - drop)]), None, gripper=1.0)
            self._phase = "release"
            self._released = True
            return self._move(ee, ee, None, gripper=0.0)

        # Not (yet) holding the cube.
        cube = cube + self.aim_offset
        at_grasp = np.linalg.norm(ee[:2] - cube[:2]) < XY_TOL and abs(ee[2] - grasp_z) < Z_TOL
        if self._closing > 0 and (at_grasp or held):
            self._closing += 1
            if self._closing > CLOSE_TICKS + 4 and not held:
                # Missed although the hand is at the grasp pose: open and rise before closing again (without
                # the flag, the next tick would find the hand still at the pose and close at once).
                self._closing = 0
                self._reopening = True
            else:
                self._phase = "grasp"
                return self._move(ee, np.array([cube[0], cube[1], grasp_z]), yaw, gripper=1.0)
        self._closing = 0
        jaws_open = env.gripper_state() <= 0.15
        if jaws_open:
            self._reopening = False
        if not jaws_open and (self._reopening or not at_grasp):
            self._phase = "open"
            lift = np.array([ee[0], ee[1], max(ee[2], grasp_z + 0.02)])
            return self._move(ee, lift, None, gripper=0.0)
        if at_grasp:
            self._closing = 1
            self._phase = "grasp"
            return self._move(ee, ee, yaw, gripper=1.0)
        above = np.array([cube[0], cube[1], cube[2] + hover])
        if np.linalg.norm(ee[:2] - cube[:2]) > DESCEND_XY_TOL:
            if ee[2] < cube[2] + hover - slack and np.linalg.norm(ee[:2] - cube[:2]) > 0.02:
                self._phase = "clear"
                return self._move(ee, np.array([ee[0], ee[1], above[2]]), yaw, gripper=0.0)
            self._phase = "approach"
            return self._move(ee, above, yaw, gripper=0.0)
        self._phase = "descend"
        # The speed limit applies to the drop only: the horizontal offset (under DESCEND_XY_TOL) is commanded
        # away in full every tick, since the arm lags sideways as it lowers and a shared limit lets that grow.
        drop = self._step_length(slow=True)
        return self._command(np.array([cube[0], cube[1], max(grasp_z, ee[2] - drop)]), yaw, gripper=0.0)

    def _at_place(self, cube: np.ndarray, place: np.ndarray) -> bool:
        return bool(np.linalg.norm(cube[:2] - place[:2]) < 2 * XY_TOL and cube[2] - place[2] < 0.006)

    def _grasp_yaw(self, cube_index: int) -> float:
        """Cube-aligned tool yaw (cubes are 90-degree symmetric) closest to the current tool yaw."""
        env = self.env
        rot = env.ee_rot()
        current = float(np.arctan2(rot[1, 0], rot[0, 0])) - env.robot.tool_yaw_offset
        cube_yaw = _yaw_of(env.cube_quat(cube_index))
        k = np.round((current - cube_yaw) / (np.pi / 2))
        return _wrap(cube_yaw + k * np.pi / 2) + env.robot.tool_yaw_offset

    def _step_length(self, slow: bool = False) -> float:
        """How far the hand may move in one control tick (slow: 40% of the expert's speed)."""
        return self.speed * (0.4 if slow else 1.0) / self.env.control_hz

    def _move(
        self, ee: np.ndarray, target: np.ndarray, yaw: float | None, gripper: float, slow: bool = False
    ) -> np.ndarray:
        """Joint targets one speed-limited step from ``ee`` towards ``target``."""
        step = self._step_length(slow)
        delta = target - ee
        dist = np.linalg.norm(delta)
        return self._command(target if dist <= step else ee + delta * (step / dist), yaw, gripper)

    def _command(self, waypoint: np.ndarray, yaw: float | None, gripper: float) -> np.ndarray:
        """Joint targets putting the hand at ``waypoint``, pointing down at ``yaw`` (None: the current yaw)."""
        env = self.env
        if yaw is None:
            rot = env.ee_rot()
            yaw = float(np.arctan2(rot[1, 0], rot[0, 0]))
        q = self.ik.solve(env.data.qpos, waypoint, top_down_rotation(yaw))
        return np.append(q, gripper).astype(np.float32)
