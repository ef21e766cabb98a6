"""Pick-and-place tasks with language instructions."""

from __future__ import annotations

from envs.tasks.base import Episode, ExpertGoal, SceneView, Task
from envs.tasks.pick_cube import PickCube
from envs.tasks.pick_place import PickPlace
from envs.tasks.stack import Stack

TASKS: dict[str, type[Task]] = {"pick_cube": PickCube, "pick_place": PickPlace, "stack": Stack}


def make_task(name: str, **kwargs: object) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name](**kwargs)  # type: ignore[arg-type]


__all__ = ["TASKS", "Episode", "ExpertGoal", "PickCube", "PickPlace", "SceneView", "Stack", "Task", "make_task"]
