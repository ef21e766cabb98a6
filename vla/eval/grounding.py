"""Does the policy use its instruction? The same scenes under swapped instructions.

Every seed gives the same scene under each swap (``instruction_swap`` in envs/tasks/base.py); only
the instruction changes, naming another cube, another target or both. Besides success under the
new instruction, each episode records which cube the policy lifted and where it left it. A policy
that ignores the language keeps going for the cube the scene was drawn around (the originally named
one), so "lifted the originally named cube" under a swap is the tell; a grounded policy moves to
the newly named cube and target.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from envs.config import EnvConfig
from envs.tabletop import TabletopEnv
from envs.tasks import make_task
from envs.tasks.base import INSTRUCTION_SWAPS
from vla.eval.metrics import Rate, rate
from vla.eval.rollout import (
    EpisodeRunner,
    PolicySource,
    check_policy_for_workers,
    prepare_worker_process,
    resolve_device,
    run_episode,
    threads_per_worker,
)
from vla.supervision.config import gate_config

LIFT_MIN = 0.02  # m above its resting height: the cube counts as lifted (a nudge does not)


@dataclass
class GroundingEpisode:
    seed: int
    swap: str
    success: bool  # judged against the (possibly swapped) instruction
    lifted: int | None  # cube lifted highest (>= LIFT_MIN), if any
    left_on: int | None  # pad (or cube) the lifted cube rests on at the end, if any
    named: tuple[int, int | None]  # (object, target) the instruction names
    original: tuple[int, int | None]  # (object, target) the scene was drawn with


class SceneProbe:
    """Reads, step by step, which cube rises highest and, at the end, what it rests on.

    Looser than the tasks' success checks on purpose (no release or speed test, the full pad
    radius): it asks where the policy went, not whether it finished.
    """

    def __init__(self) -> None:
        self.peak: np.ndarray | None = None

    def __call__(self, env: TabletopEnv) -> None:
        heights = np.array([env.cube_pos(i)[2] - env.cube_half for i in range(env.task.n_cubes)])
        self.peak = heights if self.peak is None else np.maximum(self.peak, heights)

    def lifted(self) -> int | None:
        if self.peak is None or self.peak.max() < LIFT_MIN:
            return None
        return int(self.peak.argmax())

    @staticmethod
    def resting_on(env: TabletopEnv, cube: int) -> int | None:
        """The pad (pad tasks) or cube (stacking) that ``cube`` ends on, or None."""
        pos, h = env.cube_pos(cube), env.cube_half
        if env.task.target_kind == "pad":
            for pad in range(env.task.n_pads):
                near = np.linalg.norm(pos[:2] - env.pad_pos(pad)[:2]) <= env.pad_radius()
                if near and abs(pos[2] - h) < 0.25 * h:
                    return pad
        elif env.task.target_kind == "cube":
            for other in range(env.task.n_cubes):
                below = env.cube_pos(other)
                aligned = np.linalg.norm(pos[:2] - below[:2]) <= h
                if other != cube and aligned and abs(pos[2] - below[2] - 2 * h) < 0.5 * h:
                    return other
        return None


def run_grounding_episode(runner: EpisodeRunner, seed: int, swap: str) -> GroundingEpisode:
    # Seeded noise: a stochastic head draws the same noise under every swap, so runs differ in the
    # instruction alone, whatever order the workers take the jobs in.
    torch.manual_seed(seed)
    probe = SceneProbe()
    log, _ = run_episode(runner.policy, runner.env, runner.gate, seed, runner.device, on_step=probe)
    env, ep = runner.env, runner.env.episode
    assert ep is not None
    lifted = probe.lifted()
    named = (ep.object_index, ep.target_index)
    return GroundingEpisode(
        seed=seed, swap=swap, success=log.success, lifted=lifted,
        left_on=None if lifted is None else SceneProbe.resting_on(env, lifted),
        named=named, original=ep.swapped_from or named,
    )


# The risk score only informs operators who can step in; the auto operator never does, and skipping
# it spares a flow head the extra samples it would draw per chunk.
_GATE = {"operator": {"kind": "auto"}, "risk": {"kind": "none"}}


class SwapRunners:
    """One env + gate per swap around a single policy: a checkpoint is loaded once per process."""

    def __init__(self, source: PolicySource, env_cfg: EnvConfig, device: str) -> None:
        self.source, self.env_cfg, self.device = source, env_cfg, device
        self.runners: dict[str, EpisodeRunner] = {}

    def get(self, swap: str) -> EpisodeRunner:
        if swap not in self.runners:
            cfg = replace(self.env_cfg, task_kwargs={**self.env_cfg.task_kwargs, "instruction_swap": swap})
            first = next(iter(self.runners.values()), None)
            # A loaded checkpoint serves every env; a factory builds a policy bound to its own env.
            shared = first is not None and isinstance(self.source, str | os.PathLike)
            source = first.policy if shared else self.source
            self.runners[swap] = EpisodeRunner(source, cfg, gate_config(_GATE), self.device, render=False)
        return self.runners[swap]

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
        self.runners.clear()


_WORKER: dict[str, SwapRunners] = {}


def _init_worker(source: PolicySource, env_cfg: EnvConfig, device: str, threads: int) -> None:
    # Only records what to build: the runners are built by the first job, so a start-up error reaches
    # the caller instead of making the pool restart this worker forever.
    prepare_worker_process(threads)
    _WORKER["runners"] = SwapRunners(source, env_cfg, device)


def _worker_episode(job: tuple[str, int]) -> GroundingEpisode:
    swap, seed = job
    return run_grounding_episode(_WORKER["runners"].get(swap), seed, swap)


def probe_grounding(
    policy: PolicySource, env_cfg: EnvConfig, swaps: tuple[str, ...] = INSTRUCTION_SWAPS, episodes: int = 50,
    seed_start: int = 100_000, workers: int = 1, device: str = "cpu", progress: bool = True,
) -> list[GroundingEpisode]:
    """``episodes`` seeded scenes, each run once per swap under the ``auto`` operator (no help).

    ``policy`` is what ``evaluate_policy`` takes: a checkpoint path, a policy object or a factory.
    """
    from tqdm import tqdm

    swaps = tuple(dict.fromkeys(swaps))
    if unknown := [s for s in swaps if s not in INSTRUCTION_SWAPS]:
        raise ValueError(f"unknown instruction swap(s) {unknown}; choose from {INSTRUCTION_SWAPS}")
    if episodes < 1 or workers < 1:
        raise ValueError(f"need episodes >= 1 and workers >= 1, got {episodes} and {workers}")
    for swap in swaps:  # an impossible swap for this task fails here, before any episode runs
        make_task(env_cfg.task, **{**env_cfg.task_kwargs, "instruction_swap": swap})
    device = resolve_device(device)
    check_policy_for_workers(policy, workers)
    jobs = [(swap, seed_start + i) for swap in swaps for i in range(episodes)]
    workers = min(workers, len(jobs))
    out: list[GroundingEpisode] = []
    with tqdm(total=len(jobs), desc=f"grounding {env_cfg.task}", unit="ep", disable=not progress) as bar:
        if workers == 1:
            runners = SwapRunners(policy, env_cfg, device)
            try:
                for swap, seed in jobs:
                    out.append(run_grounding_episode(runners.get(swap), seed, swap))
                    bar.update(1)
            finally:
                runners.close()
        else:
            with mp.get_context("spawn").Pool(workers, initializer=_init_worker,
                                              initargs=(policy, env_cfg, device, threads_per_worker(workers))) as pool:
                for episode in pool.imap_unordered(_worker_episode, jobs, chunksize=5):
                    out.append(episode)
                    bar.update(1)
    return sorted(out, key=lambda e: (swaps.index(e.swap), e.seed))


@dataclass
class GroundingSummary:
    swap: str
    episodes: int
    success: Rate
    lifted_named: Rate  # lifted the cube the instruction names
    lifted_original: Rate  # lifted the cube the scene was drawn around (= named when swap is none)
    left_on_named: Rate  # the lifted cube ends on the named target
    left_on_original: Rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_grounding(episodes: list[GroundingEpisode]) -> list[GroundingSummary]:
    out = []
    for swap in dict.fromkeys(e.swap for e in episodes):
        eps = [e for e in episodes if e.swap == swap]
        n = len(eps)
        # A task without a target (pick_cube) has nowhere to leave the cube: n/a, not 0%.
        target_trials = n if eps[0].named[1] is not None else 0
        out.append(GroundingSummary(
            swap=swap, episodes=n,
            success=rate(sum(e.success for e in eps), n),
            lifted_named=rate(sum(e.lifted == e.named[0] for e in eps), n),
            lifted_original=rate(sum(e.lifted == e.original[0] for e in eps), n),
            left_on_named=rate(sum(e.left_on is not None and e.left_on == e.named[1] for e in eps), target_trials),
            left_on_original=rate(
                sum(e.left_on is not None and e.left_on == e.original[1] for e in eps), target_trials
            ),
        ))
    return out
