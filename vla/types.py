"""The canonical data types shared by envs, datasets, the model and the supervision gate.

Robot-specific naming lives at the edge: environments and datasets speak LeRobot's feature names
(``observation.images.<camera>``, ``observation.state``, ``action``, ``task``); the model only ever
sees a :class:`FeatureSpec` built from a dataset or an env at run time, never constants.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
TASK_KEY = "task"
# Training-only target: the state at the episode's grasp and release keyframes (vla/data/keyframes.py).
GOAL_KEY = "goal_state"
GOAL_PIXELS_KEY = "goal_pixels"  # where the hand was at the grasp / release, in each camera's image


@dataclass(frozen=True)
class FeatureSpec:
    """Shapes and names a policy is built from; read from a dataset's features or an env's spaces.

    ``gripper_dims`` lists the action indices that are binary gripper states (0 open .. 1 closed);
    heads supervise them as binary targets.
    """

    cameras: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W), shared by all cameras
    state_dim: int
    action_dim: int
    gripper_dims: tuple[int, ...] = ()
    fps: int = 10
    state_names: tuple[str, ...] = field(default=())
    action_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("FeatureSpec needs at least one camera (observation.images.<name> feature)")
        if len(self.image_shape) != 3 or self.image_shape[0] != 3:
            raise ValueError(f"image_shape must be (3, H, W), got {self.image_shape}")
        bad = [d for d in self.gripper_dims if not 0 <= d < self.action_dim]
        if bad:
            raise ValueError(f"gripper_dims {bad} outside action_dim={self.action_dim}")

    def image_keys(self) -> list[str]:
        return [IMAGE_PREFIX + cam for cam in self.cameras]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        tuple_fields = ("cameras", "image_shape", "gripper_dims", "state_names", "action_names")
        return cls(**{k: tuple(v) if k in tuple_fields else v for k, v in data.items()})
