"""Camera projection (envs/camera.py) against real renders of the scene."""

from __future__ import annotations

import numpy as np
import pytest

from envs.camera import project_to_pixels
from envs.config import EnvConfig, make_env
from envs.tasks.language import COLOURS


def _hue(rgb: np.ndarray) -> np.ndarray:
    # Lighting scales a surface's colour; dividing by the brightest channel compares the colour itself.
    rgb = np.asarray(rgb, dtype=float)
    return rgb / rgb.max()


@pytest.mark.parametrize("seed", [5, 100_000, 100_001])
def test_projected_objects_land_on_their_colour_in_the_rendered_image(seed: int) -> None:
    env = make_env(EnvConfig(task="pick_place", image_size=96))
    try:
        obs, _ = env.reset(seed=seed)
        base = env.unwrapped
        image = obs["observation.images.front"].astype(float) / 255.0
        cam = base.camera_id("front")
        palette = {name: _hue(c[:3]) for name, c in COLOURS.items()}
        for kind, points, colours in (
            ("cube", [base.cube_pos(i) for i in range(base.task.n_cubes)], base.episode.cube_colours),
            ("pad", [base.pad_pos(i) for i in range(base.task.n_pads)], base.episode.pad_colours),
        ):
            px, visible = project_to_pixels(base.model, base.data, cam, np.stack(points), base.image_size)
            assert visible.all(), f"the front camera sees every {kind} at reset"
            for (x, y), colour in zip(px, colours, strict=True):
                seen = _hue(image[int(y), int(x)])
                nearest = min(palette, key=lambda name: np.linalg.norm(palette[name] - seen))
                assert nearest == colour, f"the {colour} {kind} projects onto a {nearest} pixel at ({x:.0f}, {y:.0f})"
    finally:
        env.close()


def test_points_behind_the_camera_or_outside_the_frame_are_not_visible() -> None:
    env = make_env(EnvConfig(task="pick_place", image_size=32))
    try:
        env.reset(seed=0)
        base = env.unwrapped
        cam = base.camera_id("front")
        behind = base.data.cam_xpos[cam] + base.data.cam_xmat[cam].reshape(3, 3)[:, 2]  # along +z: behind it
        far_left = base.data.cam_xpos[cam] + base.data.cam_xmat[cam].reshape(3, 3) @ np.array([-50.0, 0.0, -1.0])
        _, visible = project_to_pixels(base.model, base.data, cam, np.stack([behind, far_left]), 32)
        assert not visible.any()
    finally:
        env.close()
