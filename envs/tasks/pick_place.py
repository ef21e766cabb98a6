"""PickPlace: put the named cube on the named pad, with distractor cubes and pads always present.

Success: the named cube's centre lies within the pad (radius minus a margin so the cube sits
mostly on it), it rests on the table (height within 5 mm of resting, speed below 5 cm/s) and
the gripper has released it (no finger contact).
"""

from __future__ import annotations

import numpy as np

from envs.tasks.base import RESTING_SPEED, Episode, ExpertGoal, SceneView, Task
from envs.tasks.language import instruction, sample_pair


class PickPlace(Task):
    name = "pick_place"
    n_cubes = 3
    n_pads = 3
    max_steps = 150
    target_kind = "pad"

    def initialize_episode(self, rng: np.random.Generator, view: SceneView) -> Episode:
        obj, target = sample_pair(rng, self.colours, self.split, distinct=False)
        cubes = [obj, *self._others(rng, [obj], self.n_cubes - 1)]
        pads = [target, *self._others(rng, [target], self.n_pads - 1)]
        xy = self.sample_positions(rng, view, self.n_cubes + self.n_pads, min_dist=4.5 * view.cube_half)
        return Episode(
            cube_colours=cubes, pad_colours=pads, cube_xy=xy[: self.n_cubes],
            cube_yaw=rng.uniform(-np.pi / 4, np.pi / 4, self.n_cubes), pad_xy=xy[self.n_cubes :],
            instruction=instruction(self.name, rng, obj, target), object_index=0, target_index=0,
        )

    def is_success(self, view: SceneView, episode: Episode) -> bool:
        i, pad = episode.object_index, episode.target_index
        assert pad is not None
        pos = view.cube_pos(i)
        on_pad = np.linalg.norm(pos[:2] - view.pad_pos(pad)[:2]) <= view.pad_radius() - 0.4 * view.cube_half
        resting = abs(pos[2] - view.cube_half) < 0.005 and view.cube_speed(i) < RESTING_SPEED
        return bool(on_pad and resting and not view.touches_gripper(i))

    def expert_goal(self, view: SceneView, episode: Episode) -> ExpertGoal:
        assert episode.target_index is not None
        place = view.pad_pos(episode.target_index).copy()
        place[2] = view.cube_half
        return ExpertGoal(cube=episode.object_index, place=place)
