"""PickCube: lift the named cube.

Success: the named cube's centre is at least ``lift_height`` above its resting height and both
fingers touch it (it is held, not knocked into the air).
"""

from __future__ import annotations

import numpy as np

from envs.tasks.base import Episode, ExpertGoal, SceneView, Task
from envs.tasks.language import instruction


class PickCube(Task):
    name = "pick_cube"
    n_pads = 0
    max_steps = 80
    lift_height = 0.05
    more_cubes_hint = " (and task_kwargs distractors >= 1)"

    def __init__(
        self, distractors: int = 0, colours: list[str] | None = None, split: str = "all", instruction_swap: str = "none"
    ) -> None:
        if distractors < 0:
            raise ValueError(f"distractors must be >= 0, got {distractors}")
        self.n_cubes = 1 + distractors
        super().__init__(colours, split, instruction_swap)

    def initialize_episode(self, rng: np.random.Generator, view: SceneView) -> Episode:
        colours = [self.colours[i] for i in rng.permutation(len(self.colours))[: self.n_cubes]]
        xy = self.sample_positions(rng, view, self.n_cubes, min_dist=6 * view.cube_half)
        return Episode(
            cube_colours=colours, pad_colours=[], cube_xy=xy,
            cube_yaw=rng.uniform(-np.pi / 4, np.pi / 4, self.n_cubes), pad_xy=np.zeros((0, 2)),
            instruction=instruction(self.name, rng, colours[0]), object_index=0, target_index=None,
        )

    def is_success(self, view: SceneView, episode: Episode) -> bool:
        i = episode.object_index
        return bool(view.cube_pos(i)[2] >= view.cube_half + self.lift_height and view.is_grasped(i))

    def expert_goal(self, view: SceneView, episode: Episode) -> ExpertGoal:
        return ExpertGoal(cube=episode.object_index, place=None, lift_height=self.lift_height + 0.04)
