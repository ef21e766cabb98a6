"""Stack: put the named cube on top of the other named cube; a third cube is a distractor.

Success: the top cube's centre is within 40% of a cube's half-width of the bottom cube's centre
in the table plane, one cube height above it (within 8 mm), the bottom cube still rests on the
table, both are at rest and the gripper has released the top cube.
"""

from __future__ import annotations

import numpy as np

from envs.tasks.base import RESTING_SPEED, Episode, ExpertGoal, SceneView, Task
from envs.tasks.language import instruction, sample_pair


class Stack(Task):
    name = "stack"
    n_cubes = 3
    n_pads = 0
    max_steps = 150
    target_kind = "cube"

    def initialize_episode(self, rng: np.random.Generator, view: SceneView) -> Episode:
        top, bottom = sample_pair(rng, self.colours, self.split, distinct=True)
        cubes = [top, bottom, *self._others(rng, [top, bottom], self.n_cubes - 2)]
        xy = self.sample_positions(rng, view, self.n_cubes, min_dist=6 * view.cube_half)
        return Episode(
            cube_colours=cubes, pad_colours=[], cube_xy=xy,
            cube_yaw=rng.uniform(-np.pi / 4, np.pi / 4, self.n_cubes), pad_xy=np.zeros((0, 2)),
            instruction=instruction(self.name, rng, top, bottom), object_index=0, target_index=1,
        )

    def is_success(self, view: SceneView, episode: Episode) -> bool:
        top, bottom = episode.object_index, episode.target_index
        assert bottom is not None
        pt, pb = view.cube_pos(top), view.cube_pos(bottom)
        h = view.cube_half
        aligned = np.linalg.norm(pt[:2] - pb[:2]) <= 0.8 * h
        on_top = abs(pt[2] - pb[2] - 2 * h) < 0.008
        bottom_down = abs(pb[2] - h) < 0.005
        resting = max(view.cube_speed(top), view.cube_speed(bottom)) < RESTING_SPEED
        return bool(aligned and on_top and bottom_down and resting and not view.touches_gripper(top))

    def expert_goal(self, view: SceneView, episode: Episode) -> ExpertGoal:
        assert episode.target_index is not None
        place = view.cube_pos(episode.target_index).copy()
        place[2] += 2 * view.cube_half + 0.003
        return ExpertGoal(cube=episode.object_index, place=place)
