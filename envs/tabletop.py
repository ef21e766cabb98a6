"""The tabletop pick-and-place environment (gymnasium API) shared by every task and robot.

Action: absolute target joint positions for the arm, then the gripper state (0 open .. 1 closed),
sent to position actuators and held for one control period of finer physics steps.
Observation (LeRobot feature names): ``observation.images.front`` and ``observation.images.wrist``
(uint8 HxWx3), ``observation.state`` (arm joint positions + measured gripper state) and ``task``
(the instruction). ``info["is_success"]`` is reported every step.
"""

from __future__ import annotations

import atexit
import string
import weakref
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from envs.robots import PREFIX, RobotSpec, get_robot
from envs.scene import PAD_RADIUS, build_model, home_qpos
from envs.tasks import Episode, Task, make_task
from envs.tasks.language import COLOURS

CAMERAS = ("front", "wrist")
INSTRUCTION_CHARSET = string.ascii_lowercase + string.ascii_uppercase + string.digits + " ,.'-"

# Renderers hold EGL contexts; freeing them after the interpreter has torn EGL down raises noisy
# errors, so every environment still open at exit is closed while EGL is still alive. atexit runs
# callbacks last-in first-out: registering after the first context exists puts ours before
# MuJoCo's eglTerminate.
_OPEN_ENVS: weakref.WeakSet[TabletopEnv] = weakref.WeakSet()
_CLOSE_AT_EXIT_REGISTERED = False


def _close_open_envs() -> None:
    for env in list(_OPEN_ENVS):
        env.close()


def _new_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    global _CLOSE_AT_EXIT_REGISTERED
    renderer = mujoco.Renderer(model, size, size)
    if not _CLOSE_AT_EXIT_REGISTERED:
        atexit.register(_close_open_envs)
        _CLOSE_AT_EXIT_REGISTERED = True
    return renderer


class TabletopEnv(gym.Env[dict[str, Any], np.ndarray]):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "pick_cube",
        robot: str = "arm6",
        image_size: int = 96,
        control_hz: float = 10.0,
        max_steps: int | None = None,
        task_kwargs: dict[str, Any] | None = None,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        render_size: int = 256,
        cameras: tuple[str, ...] = CAMERAS,
    ) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")
        if control_hz <= 0:
            raise ValueError(f"control_hz must be positive, got {control_hz}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; choose from {CAMERAS} (or none for state only)")
        self.cameras = tuple(cameras)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.robot: RobotSpec = get_robot(robot)
        self.task: Task = make_task(task, **(task_kwargs or {}))
        self.image_size = image_size
        self.control_hz = control_hz
        self.max_steps = max_steps if max_steps is not None else self.task.max_steps
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.render_size = render_size
        self.metadata = {**self.metadata, "render_fps": round(control_hz)}

        self.cube_half = self.robot.cube_half
        self.reach_x, self.reach_y = self.robot.reach_x, self.robot.reach_y
        self.model = build_model(self.robot, self.task.n_cubes, self.task.n_pads, self.cube_half,
                                 max(image_size, render_size))
        self.data = mujoco.MjData(self.model)
        self.n_substeps = max(1, round(1.0 / (control_hz * self.model.opt.timestep)))
        self._bind_names()

        n = self.robot.n_arm
        self._low = np.append(self._joint_range[:, 0], 0.0).astype(np.float32)
        self._high = np.append(self._joint_range[:, 1], 1.0).astype(np.float32)
        self.action_space = gym.spaces.Box(self._low, self._high, dtype=np.float32)
        img = gym.spaces.Box(0, 255, (image_size, image_size, 3), dtype=np.uint8)
        self.observation_space = gym.spaces.Dict({
            **{f"observation.images.{cam}": img for cam in self.cameras},
            # Joint limits with a margin: soft limits let a joint overshoot slightly under load.
            "observation.state": gym.spaces.Box(self._low - 0.25, self._high + 0.25, (n + 1,), dtype=np.float32),
            "task": gym.spaces.Text(max_length=160, charset=INSTRUCTION_CHARSET),
        })
        self._renderer: mujoco.Renderer | None = None
        self._big_renderer: mujoco.Renderer | None = None
        _OPEN_ENVS.add(self)
        self.episode: Episode | None = None
        self._steps = 0

    # Names -> ids once, so the step loop never looks anything up by string.
    def _bind_names(self) -> None:
        m, r = self.model, self.robot
        self._arm_qadr = np.array([m.joint(PREFIX + j).qposadr[0] for j in r.arm_joints])
        self._joint_range = np.array([m.joint(PREFIX + j).range for j in r.arm_joints])
        self._arm_act = np.array([m.actuator(PREFIX + a).id for a in r.arm_actuators])
        self._grip_act = m.actuator(PREFIX + r.gripper_actuator).id
        self._grip_qadr = m.joint(PREFIX + r.gripper_joints[0]).qposadr[0]
        self.ee_site = m.site(PREFIX + r.ee_site).id
        self._cube_qadr = [m.joint(f"cube{i}").qposadr[0] for i in range(self.task.n_cubes)]
        self._cube_dadr = [m.joint(f"cube{i}").dofadr[0] for i in range(self.task.n_cubes)]
        self._cube_geom = [m.geom(f"cube{i}").id for i in range(self.task.n_cubes)]
        self._pad_geom = [m.geom(f"pad{i}").id for i in range(self.task.n_pads)]
        finger_bodies = {m.body(PREFIX + b).id for b in r.finger_bodies}
        self._finger_geoms = {
            body: {g for g in range(m.ngeom) if m.geom_bodyid[g] == body} for body in finger_bodies
        }
        self._home = home_qpos(m, r)

    # SceneView ------------------------------------------------------------------------------

    def cube_pos(self, i: int) -> np.ndarray:
        return self.data.qpos[self._cube_qadr[i] : self._cube_qadr[i] + 3].copy()

    def cube_quat(self, i: int) -> np.ndarray:
        return self.data.qpos[self._cube_qadr[i] + 3 : self._cube_qadr[i] + 7].copy()

    def cube_speed(self, i: int) -> float:
        return float(np.linalg.norm(self.data.qvel[self._cube_dadr[i] : self._cube_dadr[i] + 3]))

    def pad_pos(self, i: int) -> np.ndarray:
        return self.model.geom_pos[self._pad_geom[i]].copy()

    def pad_radius(self) -> float:
        return PAD_RADIUS * self.cube_half / 0.02

    def _touching_fingers(self, i: int) -> int:
        geom = self._cube_geom[i]
        touching = set()
        for c in self.data.contact[: self.data.ncon]:
            other = c.geom2 if c.geom1 == geom else c.geom1 if c.geom2 == geom else -1
            if other < 0:
                continue
            for body, geoms in self._finger_geoms.items():
                if other in geoms:
                    touching.add(body)
        return len(touching)

    def is_grasped(self, i: int) -> bool:
        return self._touching_fingers(i) == len(self._finger_geoms)

    def touches_gripper(self, i: int) -> bool:
        return self._touching_fingers(i) > 0

    # Robot state ----------------------------------------------------------------------------

    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.ee_site].copy()

    def ee_rot(self) -> np.ndarray:
        return self.data.site_xmat[self.ee_site].reshape(3, 3).copy()

    def arm_qpos(self) -> np.ndarray:
        return self.data.qpos[self._arm_qadr].copy()

    def pose_arm(self, arm_q: np.ndarray) -> None:
        """Put the arm's joints at ``arm_q`` and update positions (sites, cameras) without stepping physics.

        For kinematic queries on a scratch env (where was the hand, what did the wrist camera see); it
        leaves the simulation state inconsistent with its velocities, so reset before stepping again.
        """
        self.data.qpos[self._arm_qadr] = np.asarray(arm_q, dtype=float)[: len(self._arm_qadr)]
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # camera modes that track a centre of mass read it
        mujoco.mj_camlight(self.model, self.data)  # mj_kinematics leaves camera poses alone

    def gripper_state(self) -> float:
        return self.robot.gripper_state(float(self.data.qpos[self._grip_qadr]))

    @property
    def joint_limits(self) -> np.ndarray:
        """(n_arm, 2) lower/upper joint limits in radians."""
        return self._joint_range.copy()

    @property
    def table_z(self) -> float:
        return 0.0

    # gymnasium API --------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for adr, value in self._home.items():
            d.qpos[adr] = value
        d.ctrl[self._arm_act] = self.robot.home_qpos[: self.robot.n_arm]
        d.ctrl[self._grip_act] = self.robot.gripper_open_ctrl
        ep = self.task.sample_episode(self.np_random, self)
        for i, adr in enumerate(self._cube_qadr):
            yaw = ep.cube_yaw[i]
            d.qpos[adr : adr + 3] = [*ep.cube_xy[i], self.cube_half]
            d.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
            m.geom_rgba[self._cube_geom[i]] = COLOURS[ep.cube_colours[i]]
        for i, gid in enumerate(self._pad_geom):
            m.geom_pos[gid][:2] = ep.pad_xy[i]
            m.geom_rgba[gid] = COLOURS[ep.pad_colours[i]]
        mujoco.mj_forward(m, d)
        self.episode = ep
        self._steps = 0
        return self._observation(), self._info(False)

    def step(self, action: np.ndarray):
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        action = self.validate_action(action)
        d = self.data
        d.ctrl[self._arm_act] = np.clip(action[:-1], self._low[:-1], self._high[:-1])
        d.ctrl[self._grip_act] = self.robot.gripper_ctrl(float(np.clip(action[-1], 0.0, 1.0)))
        mujoco.mj_step(self.model, d, nstep=self.n_substeps)
        self._steps += 1
        success = self.task.is_success(self, self.episode)
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.max_steps and not terminated
        return self._observation(), float(success), terminated, truncated, self._info(success)

    def validate_action(self, action: Any) -> np.ndarray:
        """Reject malformed actions with a message that names the problem."""
        a = np.asarray(action, dtype=np.float64)
        expected = self.action_space.shape
        if a.shape != expected:
            raise ValueError(
                f"action has shape {a.shape}, expected {expected}: {self.robot.n_arm} target joint "
                f"positions ({', '.join(self.robot.arm_joints)}) then the gripper state (0 open .. 1 closed)"
            )
        if not np.all(np.isfinite(a)):
            bad = [i for i in range(a.size) if not np.isfinite(a[i])]
            raise ValueError(f"action contains NaN/inf at indices {bad}; refusing to send it to the robot")
        return a

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {f"observation.images.{cam}": self._render_camera(cam) for cam in self.cameras}
        obs["observation.state"] = np.append(self.arm_qpos(), self.gripper_state()).astype(np.float32)
        obs["task"] = self.episode.instruction if self.episode else ""
        return obs

    def camera_id(self, cam: str) -> int:
        """MuJoCo id of the camera behind observation ``observation.images.<cam>``."""
        name = cam if cam == "front" else PREFIX + self.robot.wrist_camera
        return self.model.camera(name).id

    def _render_camera(self, cam: str) -> np.ndarray:
        if self._renderer is None:
            self._renderer = _new_renderer(self.model, self.image_size)
        self._renderer.update_scene(self.data, camera=self.camera_id(cam))
        return self._renderer.render()

    @property
    def state_names(self) -> list[str]:
        return [*self.robot.arm_joints, "gripper"]

    @property
    def action_names(self) -> list[str]:
        return [*(f"{j}.target" for j in self.robot.arm_joints), "gripper"]

    def _target_colour(self, ep: Episode | None) -> str | None:
        """Colour of the pad (or cube) the object goes to; None when the task has no target."""
        if ep is None or ep.target_index is None:
            return None
        colours = ep.pad_colours if self.task.target_kind == "pad" else ep.cube_colours
        return colours[ep.target_index]

    def _info(self, success: bool) -> dict[str, Any]:
        ep = self.episode
        return {
            "is_success": success,
            "task": self.task.name,
            "object": ep.cube_colours[ep.object_index] if ep else None,
            "target": self._target_colour(ep),
            "step": self._steps,
        }

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._big_renderer is None:
            self._big_renderer = _new_renderer(self.model, self.render_size)
        self._big_renderer.update_scene(self.data, camera=self.camera_id("front"))
        return self._big_renderer.render()

    def close(self) -> None:
        for r in (self._renderer, self._big_renderer):
            if r is not None:
                r.close()
        self._renderer = self._big_renderer = None
