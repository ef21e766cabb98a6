"""Task interface (dm_control style): episode initialisation, success and the expert's goal.

A task knows objects by role (the object to move, the target, distractors) and never which robot
runs it. It reads the world through :class:`SceneView`, which the environment implements.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from envs.tasks.language import COLOURS, check_colours, check_split, instruction

# What an instruction swap re-assigns: the same scene, with the instruction naming another object,
# another target, or both. Success is judged against the new instruction, so a policy that ignores
# the language is caught going for the object its camera habits suggest.
INSTRUCTION_SWAPS = ("none", "object", "target", "both")


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
    # (object, target) the scene was drawn with, when an instruction swap renamed the roles
    swapped_from: tuple[int, int | None] | None = None


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
    target_kind: Literal["pad", "cube"] | None = None  # what ``Episode.target_index`` indexes
    more_cubes_hint = ""  # how to put more cubes in the scene, for the instruction-swap errors

    def __init__(self, colours: list[str] | None = None, split: str = "all", instruction_swap: str = "none") -> None:
        self.colours = list(colours) if colours is not None else list(COLOURS)
        check_colours(self.colours, "colours")
        check_split(split)
        self.split = split
        if len(self.colours) < max(self.n_cubes, self.n_pads):
            raise ValueError(
                f"task {self.name} needs at least {max(self.n_cubes, self.n_pads)} colours, got {self.colours}"
            )
        if instruction_swap not in INSTRUCTION_SWAPS:
            raise ValueError(f"instruction_swap={instruction_swap!r} is not one of {INSTRUCTION_SWAPS}")
        if instruction_swap != "none" and split != "all":
            # The swapped (object, target) colours would ignore the split: a train-split scene could be
            # renamed into a held-out pair and a held-out scene out of its pair.
            raise ValueError(f"instruction_swap={instruction_swap!r} renames colours regardless of the split; "
                             f"use split=all (got split={split!r})")
        self.instruction_swap = instruction_swap
        if instruction_swap in ("target", "both") and self.target_kind is None:
            raise ValueError(f"instruction_swap={instruction_swap!r}: {self.name} has no target to re-name; "
                             f"use instruction_swap=object{self.more_cubes_hint}")
        # Every task draws its roles into the first slots (object: cube 0; target: pad 0 or cube 1),
        # so these stand for any episode when checking that the scene has something else to name.
        first_target = {"pad": 0, "cube": 1}.get(self.target_kind or "")
        if instruction_swap != "none" and not self._swap_candidates(0, first_target):
            raise ValueError(f"instruction_swap={instruction_swap!r}: {self.name} with {self.n_cubes} cube(s) has "
                             f"no other cube to name{self.more_cubes_hint}")

    @abc.abstractmethod
    def initialize_episode(self, rng: np.random.Generator, view: SceneView) -> Episode: ...

    def sample_episode(self, rng: np.random.Generator, view: SceneView) -> Episode:
        """``initialize_episode``, then the instruction swap if one is set.

        The scene is drawn first and the swap only draws from ``rng`` afterwards, so a seed gives the
        same scene with and without the swap: the two runs differ in the instruction alone.
        """
        episode = self.initialize_episode(rng, view)
        if self.instruction_swap == "none":
            return episode
        candidates = self._swap_candidates(episode.object_index, episode.target_index)
        obj, target = candidates[int(rng.integers(len(candidates)))]
        target_colours = {"pad": episode.pad_colours, "cube": episode.cube_colours}.get(self.target_kind or "", [])
        target_colour = None if target is None else target_colours[target]
        text = instruction(self.name, rng, episode.cube_colours[obj], target_colour)
        return replace(episode, object_index=obj, target_index=target, instruction=text,
                       swapped_from=(episode.object_index, episode.target_index))

    def _swap_candidates(self, obj: int, target: int | None) -> list[tuple[int, int | None]]:
        """(object, target) index pairs the instruction swap may name instead of (``obj``, ``target``)."""
        targets: list[int | None] = [None]
        if self.target_kind is not None:
            targets = list(range(self.n_pads if self.target_kind == "pad" else self.n_cubes))
        new_object = self.instruction_swap in ("object", "both")
        new_target = self.instruction_swap in ("target", "both")
        return [
            (o, t) for o in range(self.n_cubes) for t in targets
            if (o != obj) == new_object and (t != target) == new_target
            and not (self.target_kind == "cube" and o == t)
        ]

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
