"""Typed environment configuration (the Hydra ``env`` group) and the factory that builds from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envs.tabletop import CAMERAS, TabletopEnv
from envs.tasks import TASKS


@dataclass
class EnvConfig:
    task: str = "pick_cube"
    robot: str = "arm6"
    image_size: int = 96
    control_hz: float = 10.0
    max_steps: int | None = None
    # Task options, e.g. {distractors: 1} for pick_cube, {split: heldout, colours: [...]}.
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    cameras: list[str] = field(default_factory=lambda: list(CAMERAS))

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"env.task={self.task!r} is unknown; choose from {sorted(TASKS)}")
        if self.image_size < 16:
            raise ValueError(f"env.image_size={self.image_size} is too small; use >= 16 (default 96)")


def make_env(cfg: EnvConfig, **overrides: Any) -> TabletopEnv:
    kwargs: dict[str, Any] = dict(
        task=cfg.task, robot=cfg.robot, image_size=cfg.image_size, control_hz=cfg.control_hz,
        max_steps=cfg.max_steps, task_kwargs=dict(cfg.task_kwargs), cameras=tuple(cfg.cameras),
    )
    kwargs.update(overrides)
    return TabletopEnv(**kwargs)
