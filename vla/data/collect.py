"""Scripted-expert demonstrations, run in parallel processes and recorded into a LeRobotDataset.

Only successful episodes are kept. Seeds are consumed in order and the next unused seed is saved
beside the dataset, so a resumed or extended run never repeats an episode. Optional noise
injection perturbs the *executed* joint targets while the dataset records the expert's clean
corrective action (DART), so policies learn to recover from their own drift. Optional deliberate
misses go further: in a share of the episodes a second, wrong expert drives the arm until its grasp
has missed (it aims a few centimetres off the cube and closes there), while the dataset again records
the correct expert's action at every frame. A policy that never saw a miss keeps its jaws shut on
air once it has closed them; with misses in the data it learns to open, rise and grasp again.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.config import EnvConfig, make_env
from vla.data.recorder import DatasetRecorder, dataset_features, existing_episodes

if TYPE_CHECKING:
    from envs.expert import ScriptedExpert
    from envs.tabletop import TabletopEnv

STATE_FILE = "collect_state.json"


@dataclass
class NoiseConfig:
    std: float = 0.0  # radians, on executed arm joint targets
    prob: float = 0.0  # per-step probability of a perturbation

    def __post_init__(self) -> None:
        if self.std < 0 or not 0 <= self.prob <= 1:
            raise ValueError(f"noise.std must be >= 0 and noise.prob in [0, 1], got {self.std}, {self.prob}")


@dataclass
class MissConfig:
    prob: float = 0.0  # share of episodes that start with a deliberate missed grasp
    # Metres between the cube and where the wrong expert aims, drawn uniformly in a random direction. Under
    # about 3.5 cm the open jaws still catch the cube; the misses a policy makes are of this size or larger.
    min_offset: float = 0.035
    max_offset: float = 0.065
    # The wrong expert hands over after this many ticks even if it never closed: aimed along the jaws, a
    # finger can land on the cube's top and stop the descent (the correct expert then lifts it clear).
    max_ticks: int = 45

    def __post_init__(self) -> None:
        if not 0 <= self.prob <= 1:
            raise ValueError(f"miss.prob must be in [0, 1], got {self.prob}")
        if not 0 < self.min_offset <= self.max_offset:
            raise ValueError(f"miss offsets must satisfy 0 < miss.min_offset <= miss.max_offset, got "
                             f"{self.min_offset}, {self.max_offset}")
        if self.max_ticks < 1:
            raise ValueError(f"miss.max_ticks must be >= 1, got {self.max_ticks}")


NO_MISSES = MissConfig()


@dataclass
class CollectConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    root: str = "data/pick_cube"
    repo_id: str = "local/pick_cube"
    episodes: int = 50  # total episodes wanted at root; an existing dataset is extended up to it
    seed: int = 0
    workers: int = 2
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    miss: MissConfig = field(default_factory=MissConfig)
    use_videos: bool = False
    flush_every: int = 10
    # Processes that each simulate and write their own shard, merged into root at the end
    # (vla/data/collect_shards.py). LeRobot's writer costs a few ms per frame in the one process that
    # writes, which caps a many-core host; with writers > 1, workers is not used.
    writers: int = 1

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.writers < 1:
            raise ValueError(f"writers must be >= 1, got {self.writers}")


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    task: str
    frames: list[dict[str, np.ndarray]]
    missed: bool = False  # a deliberate miss was played (and closed on something other than the cube)


_WORKER_ENV: dict[str, Any] = {}


def run_expert_episode(env_cfg: EnvConfig, seed: int, noise: NoiseConfig,
                       miss: MissConfig = NO_MISSES) -> EpisodeResult:
    """One expert episode; the env is built once per process and reused."""
    from envs.expert import CLOSE_TICKS, ScriptedExpert

    key = repr(env_cfg)
    if key not in _WORKER_ENV:
        for old in _WORKER_ENV.values():
            old.close()
        _WORKER_ENV.clear()
        _WORKER_ENV[key] = make_env(env_cfg)
    env = _WORKER_ENV[key]
    rng = np.random.default_rng(seed + 7_919)
    obs, info = env.reset(seed=seed)
    expert = ScriptedExpert(env)
    wrong = _wrong_expert(env, miss, rng)
    missed = False
    closing = 0  # ticks the wrong expert has spent closing its jaws
    frames = []
    done = False
    while not done:
        action = expert.act()
        frames.append({k: v for k, v in obs.items() if k != "task"} | {"action": action})
        if wrong is None:
            executed = action.copy()
        else:
            executed = wrong.act()
            closing = closing + 1 if wrong.phase == "grasp" else 0
            held = env.is_grasped(env.task.expert_goal(env, env.episode).cube)
            if closing > CLOSE_TICKS + 2 or held or len(frames) > miss.max_ticks:
                # The jaws have shut where the wrong expert aimed (or the grasp worked after all, or it
                # never got there): the correct expert takes over from here.
                missed = closing > CLOSE_TICKS + 2 and not held
                wrong = None
        if noise.std > 0 and rng.random() < noise.prob:
            executed[:-1] += rng.normal(0.0, noise.std, size=executed.size - 1)
        obs, _, terminated, truncated, info = env.step(executed)
        done = terminated or truncated
    return EpisodeResult(seed=seed, success=bool(info["is_success"]), task=obs["task"], frames=frames, missed=missed)


def _wrong_expert(env: TabletopEnv, miss: MissConfig, rng: np.random.Generator) -> ScriptedExpert | None:
    """With probability ``miss.prob``: an expert aiming at a random point a few centimetres off the cube."""
    from envs.expert import ScriptedExpert

    if miss.prob <= 0 or rng.random() >= miss.prob:
        return None
    angle = rng.uniform(0.0, 2 * np.pi)
    radius = rng.uniform(miss.min_offset, miss.max_offset)
    return ScriptedExpert(env, aim_offset=(radius * np.cos(angle), radius * np.sin(angle)))


def _worker(args: tuple[EnvConfig, int, NoiseConfig, MissConfig]) -> EpisodeResult:
    return run_expert_episode(*args)


def _init_worker() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")


def _results(cfg: CollectConfig, seeds: list[int], pool: Any) -> Iterator[EpisodeResult]:
    jobs = [(cfg.env, s, cfg.noise, cfg.miss) for s in seeds]
    if pool is None:
        yield from map(_worker, jobs)
    else:
        yield from pool.imap(_worker, jobs)


def read_next_seed(root: Path, default: int) -> int:
    f = root / "meta" / STATE_FILE
    return int(json.loads(f.read_text())["next_seed"]) if f.exists() else default


def write_next_seed(root: Path, seed: int) -> None:
    f = root / "meta" / STATE_FILE
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps({"next_seed": seed}))
    os.replace(tmp, f)


@dataclass
class CollectSummary:
    root: str
    recorded: int
    discarded: int
    total_episodes: int
    frames: int
    attempts: int
    seconds: float
    with_miss: int = 0  # recorded episodes that contain a deliberate missed grasp and its recovery

    @property
    def expert_success(self) -> float:
        return self.recorded / self.attempts if self.attempts else float("nan")


def collect(cfg: CollectConfig, progress: bool = True, seed_stride: int = 1) -> CollectSummary:
    """Record expert episodes at ``cfg.root`` until it holds ``cfg.episodes`` of them.

    Seeds run ``cfg.seed``, ``cfg.seed + seed_stride``, ...: a shard of a sharded recording takes every
    ``seed_stride``-th seed, so shards never share one."""
    if seed_stride < 1:
        raise ValueError(f"seed_stride must be >= 1, got {seed_stride}")
    import datasets
    from tqdm import tqdm

    datasets.disable_progress_bars()

    root = Path(cfg.root)
    have = existing_episodes(root)
    need = max(0, cfg.episodes - have)
    summary = CollectSummary(str(root), 0, 0, have, 0, 0, 0.0)
    if need == 0:
        return summary
    probe = make_env(cfg.env)
    features = dataset_features(
        probe.cameras, probe.image_size, probe.state_names, probe.action_names, cfg.use_videos
    )
    fps, robot_type = round(probe.control_hz), probe.robot.name
    probe.close()

    start = time.perf_counter()
    next_seed = read_next_seed(root, cfg.seed)
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(cfg.workers, initializer=_init_worker) if cfg.workers > 1 else None
    bar = tqdm(total=need, desc=f"collect {cfg.env.task}", unit="ep", disable=not progress)
    try:
        with DatasetRecorder(root, cfg.repo_id, fps, features, robot_type, cfg.flush_every,
                             cfg.use_videos) as rec:
            while summary.recorded < need:
                missing = need - summary.recorded
                tries = missing + max(1, missing // 20)
                seeds = list(range(next_seed, next_seed + tries * seed_stride, seed_stride))
                for result in _results(cfg, seeds, pool):
                    next_seed = result.seed + seed_stride
                    summary.attempts += 1
                    if result.success:
                        rec.add_episode(result.frames, result.task)
                        summary.recorded += 1
                        summary.frames += len(result.frames)
                        summary.with_miss += int(result.missed)
                        bar.update(1)
                    else:
                        summary.discarded += 1
                    bar.set_postfix(discarded=summary.discarded)
                    write_next_seed(root, next_seed)
                    if summary.recorded >= need:
                        break
            summary.total_episodes = rec.num_episodes
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    summary.seconds = time.perf_counter() - start
    return summary
