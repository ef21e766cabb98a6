"""Task interface (dm_control style): episode initialisation, success and the expert's goal.

A task knows objects by role (the object to move, the target, distractors) and never which robot
runs it. It reads the world through :class:`SceneView`, which the environment implements.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from envs.tasks.language import COLOURS, check_colours, check_split


class SceneView(Protocol):
    cube_half: float
    reach_x: tuple[float, float]
    reach_y: tuple[float, float]

    def cube_pos(self, i: int) -> np.ndarray: ...
    def cube_speed(self, i: int) -> float: ...
    def is_grasped(self, i: int) -> bool: ...
    def touches_gripper(self, i: int) -> bool: ...
    def pad_pos(self, i: int) -> np.ndarray: ...
    def pad_radius(self) -> float: ...


@dataclass
class Episode:
    """What one reset decided: colours per object slot, poses, the instruction and the roles."""

    cube_colours: list[str]
    pad_colours: list[str]
    cube_xy: np.ndarray  # (n_cubes, 2)
    cube_yaw: np.ndarray  # (n_cubes,)
    pad_xy: np.ndarray  # (n_pads, 2)
    instruction: str
    object_index: int
    target_index: int | None  # pad index (pick_place) or cube index (stack)


@dataclass(frozen=True)
class ExpertGoal:
    """What the scripted expert should do now: grasp ``cube`` and bring it to ``place``.

    ``place`` is the cube-centre position to release at; ``None`` means lift in place by
    ``lift_height`` (and never release).
    """

    cube: int
    place: np.ndarray | None
    lift_height: float = 0.10


RESTING_SPEED = 0.05  # m/s: below this an object counts as at rest


class Task(abc.ABC):
    name: str
    n_cubes: int
    n_pads: int
    max_steps: int

    def __init__(self, colours: list[str] | None = None, split: str = "all") -> None:
        self.colours = list(colours) if colours is not None else list(COLOURS)
        check_colours(self.colours, "colours")
        check_split(split)
        self.split = split
        if len(self.colours) < max(self.n_cubes, self.n_pads):
            raise ValueError(
                f"task {self.name} needs at least {max(self.n_cubes, self.n_pads)} colours, got {self.colours}"
            )

    @abc.abstractmethod
    def initialize_episode(self, rng: np.random.Generator, view: SceneView) -> Episode: ...

    @abc.abstractmethod
    def is_success(self, view: SceneView, episode: Episode) -> bool: ...

    @abc.abstractmethod
    def expert_goal(self, view: SceneView, episode: Episode) -> ExpertGoal: ...

    # Shared helpers -------------------------------------------------------------------------

    def _others(self, rng: np.random.Generator, exclude: list[str], k: int) -> list[str]:
        pool = [c for c in self.colours if c not in exclude]
        return [pool[i] for i in rng.permutation(len(pool))[:k]]

    @staticmethod
    def sample_positions(
        rng: np.random.Generator, view: SceneView, n: int, min_dist: float, tries: int = 2000
    ) -> np.ndarray:
        """``n`` table positions in the robot's reach, pairwise at least ``min_dist`` apart."""
        points: list[np.ndarray] = []
        for _ in range(tries):
            p = np.array([rng.uniform(*view.reach_x), rng.uniform(*view.reach_y)])
            if all(np.linalg.norm(p - q) >= min_dist for q in points):
                points.append(p)
                if len(points) == n:
                    return np.stack(points)
        raise RuntimeError(f"could not place {n} objects {min_dist} m apart in the reach region")
