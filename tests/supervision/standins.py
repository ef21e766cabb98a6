"""Stand-in policies for the gate and evaluation tests (module-level, so worker processes unpickle them).

They follow the policy contract (``predict_chunk(batch, n_samples=...)`` -> (1, H, A) or (1, k, H, A),
``reset()``) but read the simulator instead of images: the scripted expert drives them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from envs.expert import ScriptedExpert
from envs.tabletop import TabletopEnv

HORIZON = 4


def _as_chunk(action: np.ndarray, n_samples: int, noise: float = 0.0, rng: Any = None) -> torch.Tensor:
    chunk = np.repeat(np.asarray(action, dtype=np.float32)[None], HORIZON, axis=0)
    if n_samples == 1:
        return torch.from_numpy(chunk)[None]
    samples = np.repeat(chunk[None], n_samples, axis=0)
    if noise:
        samples[1:, :, :-1] += rng.normal(0.0, noise, samples[1:, :, :-1].shape).astype(np.float32)
    return torch.from_numpy(samples)[None]


class ExpertPolicy:
    """The expert's next action, repeated over the chunk; one action executed per chunk."""

    n_action_steps = 1

    def __init__(self, env: TabletopEnv) -> None:
        self.env = env
        self.expert = ScriptedExpert(env)

    def reset(self) -> None:
        self.expert.reset()

    def predict_chunk(self, batch: dict[str, Any], n_samples: int = 1, **kw: Any) -> torch.Tensor:
        return _as_chunk(self.expert.act(), n_samples)


def expert_factory(env: TabletopEnv, device: str) -> ExpertPolicy:
    return ExpertPolicy(env)


class LanguageBlindPolicy(ExpertPolicy):
    """Ignores the instruction: drives the expert to the roles the scene was drawn with."""

    def predict_chunk(self, batch: dict[str, Any], n_samples: int = 1, **kw: Any) -> torch.Tensor:
        env, episode = self.env, self.env.episode
        if episode is not None and episode.swapped_from is not None:
            obj, target = episode.swapped_from
            env.episode = replace(episode, object_index=obj, target_index=target)
        try:
            return _as_chunk(self.expert.act(), n_samples)
        finally:
            env.episode = episode


def language_blind_factory(env: TabletopEnv, device: str) -> LanguageBlindPolicy:
    return LanguageBlindPolicy(env)


class DropOncePolicy(ExpertPolicy):
    """Lets go of the cube the first time it carries it, then freezes until the cube is held again."""

    def reset(self) -> None:
        super().reset()
        self.dropped = False
        self.frozen: np.ndarray | None = None

    def predict_chunk(self, batch: dict[str, Any], n_samples: int = 1, **kw: Any) -> torch.Tensor:
        env = self.env
        goal = env.task.expert_goal(env, env.episode)
        held = env.is_grasped(goal.cube)
        if self.frozen is not None and held:
            self.frozen = None  # somebody grasped it again: carry on as the expert
        if self.frozen is not None:
            return _as_chunk(self.frozen, n_samples)
        action = self.expert.act()
        if not self.dropped and held and env.cube_pos(goal.cube)[2] > env.cube_half + 0.03:
            self.dropped = True
            self.frozen = np.append(env.arm_qpos(), 0.0)  # open the gripper and stay put
            return _as_chunk(self.frozen, n_samples)
        return _as_chunk(action, n_samples)


def drop_once_factory(env: TabletopEnv, device: str) -> DropOncePolicy:
    return DropOncePolicy(env)


class FrozenPolicy:
    """Never moves: proposes the home pose with the gripper open."""

    n_action_steps = 1

    def __init__(self, env: TabletopEnv) -> None:
        self.env = env

    def reset(self) -> None:
        self.home = np.append(self.env.arm_qpos(), 0.0)

    def predict_chunk(self, batch: dict[str, Any], n_samples: int = 1, **kw: Any) -> torch.Tensor:
        return _as_chunk(self.home, n_samples)


class NaNPolicy(ExpertPolicy):
    """Returns NaN in every chunk."""

    def predict_chunk(self, batch: dict[str, Any], n_samples: int = 1, **kw: Any) -> torch.Tensor:
        return _as_chunk(np.full(self.env.action_space.shape, np.nan), n_samples)


class RaisingPolicy(ExpertPolicy):
    def predict_chunk(self, batch: dict[str, Any], n_samples: int = 1, **kw: Any) -> torch.Tensor:
        raise RuntimeError("inference failed")


class NoisySamplerPolicy(ExpertPolicy):
    """A stochastic stand-in: sample 0 is the expert's action, the others add joint noise of std ``noise`` rad."""

    stochastic = True

    def __init__(self, env: TabletopEnv, noise: float, seed: int = 0) -> None:
        super().__init__(env)
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def predict_chunk(self, batch: dict[str, Any], n_samples: int = 1, **kw: Any) -> torch.Tensor:
        return _as_chunk(self.expert.act(), n_samples, self.noise, self.rng)


def broken_factory(env: Any, device: str) -> Any:
    """A policy source that fails to load, as a checkpoint for other cameras would."""
    raise ValueError("this policy cannot drive the env (stand-in for a checkpoint/env mismatch)")
