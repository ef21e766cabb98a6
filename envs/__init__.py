"""MuJoCo pick-and-place environments with language instructions, registered with gymnasium.

    import gymnasium as gym, envs
    env = gym.make("vla/PickPlace-v0", robot="arm6", image_size=96)
"""

from __future__ import annotations

import gymnasium as gym

ENV_IDS = {"pick_cube": "vla/PickCube-v0", "pick_place": "vla/PickPlace-v0", "stack": "vla/Stack-v0"}

for _task, _id in ENV_IDS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point="envs.tabletop:TabletopEnv", kwargs={"task": _task})


def env_id(task: str) -> str:
    if task not in ENV_IDS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(ENV_IDS)}")
    return ENV_IDS[task]
