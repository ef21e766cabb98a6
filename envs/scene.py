"""Builds the tabletop scene around a robot with MjSpec: table, lights, cameras, cubes and pads.

The model is compiled once per environment. Per episode only poses and colours change (qpos and
geom_rgba), so resets cost microseconds and never recompile. Object names are positional
(``cube0``, ``pad1``); the task maps colours onto them each episode.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.robots import PREFIX, RobotSpec

TABLE_HALF = (0.45, 0.5, 0.02)
TABLE_CENTER = (0.35, 0.0)
PAD_RADIUS = 0.045

_SCENE = """
<mujoco model="tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <!-- Shadows and offscreen multisampling off: a 128x128 frame drops from ~50 ms to ~1 ms. -->
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{offsize}" offheight="{offsize}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.55 0.55 0.55" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.62 0.58 0.52" rgb2="0.58 0.54 0.48"
             width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="6 6"/>
    <material name="floor" rgba="0.30 0.32 0.35 1"/>
  </asset>
  <worldbody>
    <geom name="floor" type="plane" size="2 2 0.05" pos="0 0 -0.75" material="floor" contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="{th}" pos="{tc} -0.02" material="table" friction="1 0.01 0.0001"/>
    <light name="key" pos="0.4 -0.3 1.5" dir="0 0.2 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
  </worldbody>
</mujoco>
"""


def _look_at(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return np.concatenate([right, up])


def build_model(
    robot: RobotSpec, n_cubes: int, n_pads: int, cube_half: float, image_size: int
) -> mujoco.MjModel:
    """Compile the scene with ``n_cubes`` free cubes and ``n_pads`` flat target pads."""
    scene = mujoco.MjSpec.from_string(
        _SCENE.format(
            offsize=max(image_size, 64),
            th=" ".join(map(str, TABLE_HALF)),
            tc=" ".join(map(str, TABLE_CENTER)),
        )
    )
    world = scene.worldbody
    reach_mid = np.array([np.mean(robot.reach_x), 0.0, 0.0])
    # Framed so the reach region fills most of a small image: distance scales with the region.
    size = max(robot.reach_x[1] - robot.reach_x[0], robot.reach_y[1] - robot.reach_y[0])
    cam_pos = reach_mid + np.array([0.95 * size, 0.0, 1.15 * size])
    look = reach_mid - np.array([0.1 * size, 0.0, 0.0])
    world.add_camera(name="front", pos=cam_pos, xyaxes=_look_at(cam_pos, look), fovy=55)

    for i in range(n_pads):
        world.add_geom(
            name=f"pad{i}", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[PAD_RADIUS * cube_half / 0.02, 0.001, 0],
            pos=[0.4, 0.0, 0.001], contype=0, conaffinity=0, rgba=[0.5, 0.5, 0.5, 1],
        )
    for i in range(n_cubes):
        body = world.add_body(name=f"cube{i}", pos=[0.4, 0.1 * i, cube_half])
        body.add_freejoint(name=f"cube{i}")
        body.add_geom(
            name=f"cube{i}", type=mujoco.mjtGeom.mjGEOM_BOX, size=[cube_half] * 3, mass=0.05,
            friction=[1.2, 0.01, 0.0001], condim=4, rgba=[0.5, 0.5, 0.5, 1],
        )

    arm = mujoco.MjSpec.from_file(str(robot.mjcf))
    # Keyframes of the robot file would not match the scene's qpos layout; home comes from RobotSpec.
    for key in list(arm.keys):
        arm.delete(key)
    if robot.prepare is not None:
        robot.prepare(arm)
    mount = world.add_frame(pos=list(robot.base_pos))
    scene.attach(arm, prefix=PREFIX, frame=mount)
    return scene.compile()


def home_qpos(model: mujoco.MjModel, robot: RobotSpec) -> dict[int, float]:
    """qpos address -> value of the robot's home configuration."""
    names = robot.arm_joints + robot.gripper_joints
    return {int(model.joint(PREFIX + n).qposadr[0]): v for n, v in zip(names, robot.home_qpos, strict=True)}
