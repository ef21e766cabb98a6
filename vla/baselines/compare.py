"""The policy comparison of ``scripts/bench_policies.py``: per task, train every method on the same demos,
then time batch-1 inference and evaluate it on the same seeded episodes through ``evaluate_policy``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from envs.config import EnvConfig, make_env
from vla.baselines.fit import FitResult, fit
from vla.baselines.lerobot_adapter import image_stats
from vla.baselines.methods import LABELS, Recipe, build_recipe
from vla.baselines.timing import Timing, count_parameters, time_calls
from vla.data.collect import CollectConfig
from vla.data.dataset import FrameStore, load_frames
from vla.data.keyframes import keyframe_dataset_options
from vla.data.stats import compute_stats, relative_action_stats
from vla.eval.rollout import (
    env_feature_spec,
    evaluate_policy,
    obs_to_batch,
    prepare_worker_process,
    threads_per_worker,
)
from vla.model_config import HeadConfig
from vla.parallel import JobFailed, run_in_processes
from vla.tokenizer import build_vocab
from vla.train.checkpoint import IncompatibleCheckpointError, check_compatible
from vla.train.loop import seed_everything

log = logging.getLogger(__name__)


@dataclass
class CompareSettings:
    steps: int
    batch_size: int
    episodes: int
    seed: int = 0
    seed_start: int = 100_000  # demos are collected from seed 0 up: evaluation seeds stay disjoint
    preset: str = "tiny"
    workers: int = 1
    latency_reps: int = 30
    latency_warmup: int = 3
    max_episode_steps: int | None = None  # None: the task's own limit
    amp: bool = False  # bf16 autocast in training, on whatever device (bench_policies: on CUDA by default)
    progress: bool = True
    ema_decay: float = 0.0  # > 0: every method is evaluated with its weight average


@dataclass
class MethodResult:
    task: str
    method: str
    label: str
    uses_language: bool
    recipe: str  # optimiser, schedule, clipping
    params: int
    fit: FitResult
    latency: Timing
    successes: int
    episodes: int
    success_rate: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["latency"] = {"median_ms": self.latency.median_ms, "p99_ms": self.latency.p99_ms}
        return out


# Recording settings a comparison may change; the env, root, episode count and processes have their own flags.
_DEMO_OPTION_GROUPS = ("noise", "miss")
_DEMO_OPTION_FIELDS = ("seed", "use_videos", "flush_every")


def demo_config(task: str, root: Path, episodes: int, image_size: int, workers: int, writers: int = 1,
                options: Sequence[str] = ()) -> CollectConfig:
    """The recording ``ensure_demos`` runs. ``options`` are ``field=value`` overrides read the way
    ``scripts/collect.py`` reads them (OmegaConf, typed by the config), e.g. ``noise.std=0.01 miss.prob=0.4``;
    a bad one raises ``ValueError``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = CollectConfig(env=EnvConfig(task=task, image_size=image_size), root=str(root), repo_id=f"local/{task}",
                        episodes=episodes, workers=workers, writers=writers)
    for item in options:
        key = item.partition("=")[0]
        group, _, name = key.rpartition(".")
        if "=" not in item or (group and group not in _DEMO_OPTION_GROUPS) or \
                (not group and name not in _DEMO_OPTION_FIELDS):
            raise ValueError(f"demo option {item!r}: write FIELD=VALUE with FIELD one of {list(_DEMO_OPTION_FIELDS)} "
                             f"or {[g + '.<field>' for g in _DEMO_OPTION_GROUPS]}, e.g. miss.prob=0.4")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(list(options)))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]  # runs the configs' own checks
    except OmegaConfBaseException as exc:
        raise ValueError(f"demo options {list(options)}: {str(exc).splitlines()[0]}") from exc


def ensure_demos(task: str, root: Path, episodes: int, image_size: int, workers: int, writers: int = 1,
                 options: Sequence[str] = ()) -> None:
    """Record ``episodes`` scripted-expert demos of ``task`` at ``root`` unless a dataset is already there
    (``writers`` > 1: that many processes each write a shard, vla/data/collect_shards.py)."""
    if (root / "meta" / "info.json").is_file():
        if options or writers > 1:
            log.warning("%s already holds a dataset: it is used as it is, and the recording settings given "
                        "(writers=%d, %s) are not applied; pass a new --data-root to record with them",
                        root, writers, " ".join(options) or "no options")
        return
    from vla.data.collect import collect
    from vla.data.collect_shards import collect_in_shards

    cfg = demo_config(task, root, episodes, image_size, workers, writers, options)
    log.info("no dataset at %s: recording %d %s demos", root, episodes, task)
    summary = collect_in_shards(cfg) if writers > 1 else collect(cfg)
    log.info("recorded %d %s demos (%d frames) in %.1f s", summary.recorded, task, summary.frames, summary.seconds)


def task_env(task: str, store: FrameStore, max_steps: int | None) -> EnvConfig:
    """The env the demos came from (cameras and image size read from the dataset), checked against them."""
    spec = store.spec
    env_cfg = EnvConfig(
        task=task, image_size=spec.image_shape[1], cameras=list(spec.cameras), max_steps=max_steps
    )
    env = make_env(env_cfg)
    try:
        check_compatible(spec, env_feature_spec(env))
    except IncompatibleCheckpointError as exc:
        raise ValueError(
            f"the demos do not match the {task} env they are evaluated in ({exc}); record them "
            f"with scripts/collect.py env={task}, or pass that task's data with --data-root"
        ) from exc
    finally:
        env.close()
    return env_cfg


def _latency(model: torch.nn.Module, env_cfg: EnvConfig, device: torch.device, s: CompareSettings) -> Timing:
    env = make_env(env_cfg)
    try:
        obs, _ = env.reset(seed=s.seed_start)
    finally:
        env.close()
    batch = obs_to_batch(obs, device)

    def call() -> None:
        with torch.inference_mode():
            model.predict_chunk(batch).cpu()

    return time_calls(call, s.latency_reps, s.latency_warmup, device)


def _training_targets(recipe: Recipe, store: FrameStore, env_cfg: EnvConfig,
                      cache: dict[tuple[bool, bool, str], dict[str, Any]]) -> dict[str, Any]:
    """Our VLA's keyframe-goal and grounding targets when its config turns those losses on, built as the
    training app builds them; LeRobot's methods have no such losses and train on the plain chunks. The
    grounding pixels take a pass of the env's cameras over every frame, so methods asking for the same
    targets share one build through ``cache``."""
    if not recipe.name.startswith("vla"):
        return {}
    cfg = recipe.model.cfg
    key = (cfg.head.goal_loss_weight > 0, cfg.backbone.grounding_loss_weight > 0, cfg.head.goal_frames)
    if key not in cache:
        cache[key] = keyframe_dataset_options(store, env_cfg, cfg.head.goal_loss_weight,
                                              cfg.backbone.grounding_loss_weight, cfg.head.goal_frames)
    return cache[key]


def compare_on_task(
    task: str,
    root: Path,
    methods: list[str],
    device: torch.device,
    s: CompareSettings,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[MethodResult]:
    store = load_frames(root)
    env_cfg = task_env(task, store, s.max_episode_steps)
    stats = compute_stats(store.state, store.action, store.spec)
    chunk = HeadConfig().chunk_size
    rel_stats = relative_action_stats(stats, store.state, store.action, store.episode_end,
                                      torch.arange(len(store)), chunk, store.spec)
    img_stats = image_stats(store.images)
    vocab = build_vocab(store.tasks)
    log.info("%s: %d episodes, %d frames from %s", task, len(store.episode_ids), len(store), root)
    results = []
    targets: dict[tuple[bool, bool, str], dict[str, Any]] = {}
    for name in methods:
        seed_everything(s.seed)  # same init stream and the same batch order for every method
        recipe = build_recipe(name, store.spec, stats, img_stats, vocab, s.steps, device, s.preset, overrides,
                              relative_stats=rel_stats)
        trained = fit(recipe, store, s.steps, s.batch_size, s.seed, device, s.amp, s.progress, s.ema_decay,
                      dataset_options=_training_targets(recipe, store, env_cfg, targets))
        model = recipe.model.eval()
        latency = _latency(model, env_cfg, device, s)
        # A pool of CPU workers gets a pickled copy of the policy; a CUDA policy runs in this process.
        workers = s.workers if device.type == "cpu" else 1
        evaluation = evaluate_policy(
            model, env_cfg, s.episodes, s.seed_start, None, str(device), workers, progress=s.progress
        )
        m = evaluation.summary()
        r = MethodResult(
            task=task,
            method=name,
            label=LABELS[name],
            uses_language=recipe.uses_language,
            recipe=recipe.describe(),
            params=count_parameters(model),
            fit=trained,
            latency=latency,
            successes=sum(e.success for e in evaluation.episodes),
            episodes=len(evaluation.episodes),
            success_rate=m["success_rate"],
            ci_low=m["success_ci_low"],
            ci_high=m["success_ci_high"],
        )
        results.append(r)
        # One line per method, so a long --quiet run shows where it is and keeps what it measured.
        log.info("%s / %s: %d/%d successes, %.1f train samples/s, latency %s ms", task, r.label, r.successes,
                 r.episodes, r.fit.samples_per_s, r.latency.describe())
        del recipe, model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def _compare_one(task: str, root: Path, method: str, device: str, s: CompareSettings,
                 overrides: dict[str, dict[str, Any]] | None, threads: int) -> MethodResult:
    """One method of ``compare_concurrently``, in its own spawned process."""
    logging.basicConfig(level=logging.INFO, format=f"[{method}] %(message)s")
    prepare_worker_process(threads)
    return compare_on_task(task, root, [method], torch.device(device), s, overrides)[0]


def compare_concurrently(
    task: str,
    root: Path,
    methods: list[str],
    device: torch.device,
    s: CompareSettings,
    overrides: dict[str, dict[str, Any]] | None = None,
    jobs: int = 2,
    threads: int = 0,
) -> list[MethodResult]:
    """``compare_on_task`` with up to ``jobs`` methods training and evaluating at once, one process each.

    Meant for a GPU, where one small model's training is bound by the host and leaves the device mostly
    idle: several methods share it. Each method's figures are its own run's, but its samples/s and latency
    are then measured while the others run, which the report must say. Each process holds its own copy of
    the frames. ``threads`` is each process's torch threads (0: the host's cores shared out, so the
    processes do not oversubscribe it). Results come back in ``methods`` order; a method that fails stops
    the comparison with its traceback.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not methods:
        return []
    threads = threads or threads_per_worker(min(jobs, len(methods)))
    try:
        return run_in_processes(
            _compare_one,
            [(task, root, m, str(device), s, overrides, threads) for m in methods],
            methods,
            max_running=jobs,
        )
    except JobFailed as exc:
        raise RuntimeError(f"{task} / {exc.name} failed in its process:\n{exc.detail}\nRerun with --jobs 1 to "
                           "run it in this process") from exc
