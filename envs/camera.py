"""Pinhole projection of world points into a MuJoCo camera's rendered image.

Used wherever an image position must be compared with the world: where a policy's attention lands
(vla/eval/slot_hits.py) and the image-space keyframe targets that supervise it (vla/data/keyframes.py).
"""

from __future__ import annotations

import mujoco
import numpy as np


def project_to_pixels(model: mujoco.MjModel, data: mujoco.MjData, camera: int, points: np.ndarray,
                      size: int) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> (N, 2) continuous pixel coordinates (x right, y down) in a size x size image
    rendered from ``camera``, and (N,) whether each point is in front of the camera and inside the image.

    MuJoCo cameras look along their frame's -z with +y up; ``cam_fovy`` is the vertical field of view.
    ``data`` must hold the camera's current pose (after mj_forward or mj_kinematics).
    """
    rot = data.cam_xmat[camera].reshape(3, 3)
    rel = (np.asarray(points, dtype=float) - data.cam_xpos[camera]) @ rot  # camera-frame coordinates
    depth = -rel[:, 2]
    focal = 0.5 * size / np.tan(np.deg2rad(model.cam_fovy[camera]) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        px = np.stack([0.5 * size + focal * rel[:, 0] / depth, 0.5 * size - focal * rel[:, 1] / depth], axis=1)
    visible = (depth > 0) & np.all((px >= 0) & (px < size), axis=1)
    return px, visible
