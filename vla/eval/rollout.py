"""Seeded policy rollouts under the supervision gate, in parallel processes.

Each worker process builds its own env, policy (a checkpoint path is loaded there), operator and
gate once and runs whole episodes: the gate, the simulated operator and the safety filter read the
MuJoCo state of *their* env directly (forward kinematics, the scene triggers), which a vector env
would hide behind a process boundary, so a process pool of whole episodes keeps per-episode gate
state simple and correct. ``workers=1`` runs in the calling process with the given policy object and
no pool: the cheap path the training loop uses.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from envs.config import EnvConfig, make_env
from envs.tabletop import TabletopEnv
from vla.eval.metrics import EpisodeLog, summarize
from vla.eval.outcomes import OutcomeTracker
from vla.supervision.config import GateConfig, gate_config
from vla.supervision.gate import SupervisionGate
from vla.supervision.operators import build_operator
from vla.supervision.risk import resolve_risk_kind
from vla.types import IMAGE_PREFIX, STATE_KEY, TASK_KEY, FeatureSpec


@runtime_checkable
class PolicyLike(Protocol):
    def predict_chunk(self, batch: dict[str, Any], **kw: Any) -> Any: ...
    def reset(self) -> None: ...


# Builds a policy inside a worker process from that worker's env (picklable: a module-level class or
# function). It lets privileged stand-ins, e.g. the scripted expert, be evaluated like a checkpoint.
PolicyFactory = Callable[[TabletopEnv, str], PolicyLike]
PolicySource = str | os.PathLike | PolicyLike | PolicyFactory


def resolve_device(device: str | torch.device) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else is checked and passed on."""
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device=cpu or device=auto")
    return device


def obs_to_batch(obs: Mapping[str, Any], device: str | torch.device = "cpu") -> dict[str, Any]:
    """One env observation -> a policy batch of size 1.

    Images uint8 (H, W, 3) -> float32 (1, 3, H, W) in [0, 1]; state -> float32 (1, S); task -> [str].
    """
    batch: dict[str, Any] = {}
    for key, value in obs.items():
        if key.startswith(IMAGE_PREFIX):
            img = torch.as_tensor(np.ascontiguousarray(value))
            if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != torch.uint8:
                raise ValueError(f"obs[{key!r}] must be uint8 (H, W, 3), got {img.dtype} {tuple(img.shape)}")
            batch[key] = img.permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=torch.float32).div_(255.0)
    if STATE_KEY not in obs:
        raise ValueError(f"obs lacks {STATE_KEY!r}; it has {sorted(obs)}")
    batch[STATE_KEY] = torch.as_tensor(np.asarray(obs[STATE_KEY], dtype=np.float32), device=device).unsqueeze(0)
    batch[TASK_KEY] = [str(obs.get(TASK_KEY, ""))]
    return batch


def env_feature_spec(env: TabletopEnv) -> FeatureSpec:
    """The features a policy must have been trained on to drive ``env`` (as recorded by collect)."""
    return FeatureSpec(
        cameras=tuple(env.cameras), image_shape=(3, env.image_size, env.image_size),
        state_dim=env.robot.n_arm + 1, action_dim=env.robot.n_arm + 1, gripper_dims=(env.robot.n_arm,),
        fps=round(env.control_hz), state_names=tuple(env.state_names), action_names=tuple(env.action_names),
    )


def policy_n_action_steps(policy: Any) -> int | None:
    """Actions a policy executes per chunk (``cfg.head.n_action_steps`` or ``n_action_steps``)."""
    head = getattr(getattr(policy, "cfg", None), "head", None)
    n = getattr(head, "n_action_steps", None) or getattr(policy, "n_action_steps", None)
    return int(n) if n else None


def build_policy(source: PolicySource, env: TabletopEnv, device: str) -> PolicyLike:
    if isinstance(source, str | os.PathLike):
        from vla.train.checkpoint import load_policy

        return load_policy(source, device, spec=env_feature_spec(env))
    if isinstance(source, PolicyLike):
        return source
    if callable(source):
        policy = source(env, device)
        if not isinstance(policy, PolicyLike):
            raise TypeError(f"policy factory {source!r} returned {type(policy).__name__}, which lacks "
                            "predict_chunk(batch) and reset()")
        return policy
    raise TypeError(f"policy must be a checkpoint path, a policy (predict_chunk + reset) or a factory "
                    f"(env, device) -> policy; got {type(source).__name__}")


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


@dataclass
class EpisodeVideo:
    seed: int
    success: bool
    frames: list[np.ndarray]  # (H, W, 3) uint8, one before the first step and one after each
    overlays: list[dict[str, Any]]  # per frame: step, actor, risk, decision


def episode_goal(info: Mapping[str, Any], env: TabletopEnv) -> str:
    """What an episode's instruction names, from the env's reset info: ``"blue cube -> red pad"``, or
    ``"blue cube"`` when the task has no target; "" when the env does not say."""
    obj, target = info.get("object"), info.get("target")
    if not obj:
        return ""
    if not target:
        return f"{obj} cube"
    return f"{obj} cube -> {target} {getattr(env.task, 'target_kind', None) or 'target'}"


def run_episode(
    policy: PolicyLike, env: TabletopEnv, gate: SupervisionGate, seed: int, device: str = "cpu",
    record_video: bool = False, on_step: Callable[[TabletopEnv], None] | None = None,
) -> tuple[EpisodeLog, EpisodeVideo | None]:
    """One seeded episode under ``gate``; ends on success, time-out or a stop.

    ``on_step(env)`` runs after the reset and after every step, for probes that read the scene.
    """
    start = time.perf_counter()
    obs, info = env.reset(seed=seed)
    instruction, goal = str(obs.get(TASK_KEY, "")), episode_goal(info, env)
    policy.reset()
    gate.reset()

    def propose(n_samples: int) -> np.ndarray:
        batch = obs_to_batch(obs, device)
        out = policy.predict_chunk(batch, n_samples=n_samples) if n_samples > 1 else policy.predict_chunk(batch)
        return _to_numpy(out)[0]

    video = EpisodeVideo(seed, False, [], []) if record_video else None
    shown = ""
    if video is not None:
        video.frames.append(env.render())
        video.overlays.append({"step": 0, "actor": "-", "risk": None, "decision": ""})
    success, steps = bool(info.get("is_success", False)), 0
    outcome = OutcomeTracker()
    outcome.update(env)
    if on_step is not None:
        on_step(env)
    while not success and steps < env.max_steps:
        result = gate.tick(obs, propose)
        if result.actor == "stopped":
            break
        obs, _, terminated, truncated, info = env.step(result.action)
        steps += 1
        success = bool(info["is_success"])
        outcome.update(env)
        if on_step is not None:
            on_step(env)
        if video is not None:
            if result.decision is not None:
                d = result.decision
                shown = f"{d.decision} ({d.actor})" + (f": {d.reason}" if d.actor != "gate" else "")
            video.frames.append(env.render())
            video.overlays.append({"step": steps, "actor": result.actor, "decision": shown,
                                   "risk": result.risk if np.isfinite(result.risk) else None})
        if terminated or truncated:
            break
    s = gate.stats
    log = EpisodeLog(
        seed=seed, task=env.task.name, success=success, steps=steps, policy_steps=s.policy_steps,
        operator_steps=s.operator_steps, hold_steps=s.hold_steps, takeovers=s.takeovers, vetoes=s.vetoes,
        rejections=s.rejections, aborted=s.aborted, abort_reason=s.abort_reason, clamps=dict(s.clamps),
        rejection_reasons=dict(s.rejection_reasons), risks=list(s.risks), takeover_steps=list(s.takeover_steps),
        takeover_reasons=list(s.takeover_reasons), decisions=[r.to_dict() for r in gate.log],
        seconds=time.perf_counter() - start, outcome=outcome.outcome(env, success), instruction=instruction,
        goal=goal,
    )
    if video is not None:
        video.success = success
    return log, video


class EpisodeRunner:
    """Env + policy + operator + gate, built once and reused for many episodes."""

    def __init__(self, source: PolicySource, env_cfg: EnvConfig, gate_cfg: GateConfig, device: str,
                 render: bool, operator_kwargs: dict[str, Any] | None = None) -> None:
        self.env = make_env(env_cfg, render_mode="rgb_array") if render else make_env(env_cfg)
        self.device = device
        try:
            self.policy = build_policy(source, self.env, device)
            self.operator = build_operator(gate_cfg.operator, **(operator_kwargs or {}))
        except BaseException:
            self.env.close()
            raise
        self.gate = SupervisionGate(gate_cfg, self.env, self.operator,
                                    risk_kind=resolve_risk_kind(gate_cfg.risk.kind, self.policy),
                                    n_action_steps=policy_n_action_steps(self.policy))

    def run(self, seed: int, record_video: bool) -> tuple[EpisodeLog, EpisodeVideo | None]:
        return run_episode(self.policy, self.env, self.gate, seed, self.device, record_video)

    def close(self) -> None:
        self.operator.close()
        self.env.close()


_RUNNER: dict[str, EpisodeRunner] = {}


def check_policy_for_workers(policy: PolicySource, workers: int) -> None:
    """A policy object on a GPU cannot be pickled to worker processes; say what to pass instead."""
    if workers > 1 and isinstance(policy, torch.nn.Module) and any(p.is_cuda for p in policy.parameters()):
        raise ValueError("a CUDA policy object cannot be sent to worker processes; pass its checkpoint path "
                         "(each worker loads it on the device) or use workers=1")


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def prepare_worker_process(threads: int) -> None:
    """Start-up of a rollout worker process: headless rendering and its share of the CPU threads."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(threads)


def _init_worker(source: PolicySource, env_cfg: EnvConfig, gate_cfg: GateConfig, device: str, threads: int,
                 render: bool) -> None:
    prepare_worker_process(threads)
    # A Pool replaces a worker whose initializer raised, forever, and the parent waits forever: keep the
    # error and raise it from the first episode instead, so it reaches the caller.
    try:
        _RUNNER["runner"] = EpisodeRunner(source, env_cfg, gate_cfg, device, render)
    except Exception as exc:  # any start-up error; re-raised in _worker_episode
        _RUNNER["error"] = exc


def _worker_episode(job: tuple[int, bool]) -> tuple[EpisodeLog, EpisodeVideo | None]:
    if "error" in _RUNNER:
        raise _RUNNER["error"]
    return _RUNNER["runner"].run(*job)


@dataclass
class EvalResult:
    task: str
    operator: str
    robot: str
    seed_start: int
    episodes: list[EpisodeLog]
    seconds: float
    gate: dict[str, Any] = field(default_factory=dict)
    videos: list[EpisodeVideo] = field(default_factory=list)
    fps: int = 10  # control rate: the videos play in real time

    @property
    def metrics(self) -> dict[str, Any]:
        return summarize(self.episodes)

    def summary(self) -> dict[str, float]:
        """Flat scalar figures (nan where undefined), e.g. for a training logger."""
        m = self.metrics
        keys = ("success_rate", "success_without_intervention", "interventions_per_episode", "autonomy",
                "vetoes_per_episode", "aborts", "mean_steps", "risk_failure_auroc")
        out = {k: float("nan") if m[k] is None else float(m[k]) for k in keys}
        out["success_ci_low"], out["success_ci_high"] = (float(v) for v in m["success_ci95"])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "operator": self.operator, "robot": self.robot, "seed_start": self.seed_start,
                "seconds": self.seconds, "fps": self.fps, "gate": self.gate, "metrics": self.metrics,
                "episodes": [e.to_dict() for e in self.episodes]}


def evaluate_policy(
    policy: PolicySource,
    env_cfg: EnvConfig,
    episodes: int = 50,
    seed_start: int = 100_000,
    gate_cfg: GateConfig | Mapping[str, Any] | None = None,
    device: str = "cpu",
    workers: int = 1,
    video_episodes: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Run ``episodes`` seeded episodes (seeds ``seed_start`` ..) under the gate; see module docstring.

    ``policy``: a checkpoint path (each worker loads it on ``device``), a policy object (pickled to
    the workers when ``workers > 1``; keep it on the CPU then) or a factory ``(env, device) -> policy``.
    The first ``video_episodes`` episodes are rendered for the report's videos.
    """
    from tqdm import tqdm

    if episodes < 1 or workers < 1 or video_episodes < 0 or seed_start < 0:
        raise ValueError(f"need episodes >= 1, workers >= 1, video_episodes >= 0, seed_start >= 0; got "
                         f"{episodes}, {workers}, {video_episodes}, {seed_start}")
    gcfg = gate_config(gate_cfg)  # type: ignore[arg-type]
    device = resolve_device(device)
    workers = min(workers, episodes)
    if gcfg.operator.kind == "terminal" and workers > 1:
        raise ValueError("gate.operator.kind=terminal needs workers=1: one person answers at one keyboard")
    check_policy_for_workers(policy, workers)
    jobs = [(seed_start + i, i < video_episodes) for i in range(episodes)]
    render = video_episodes > 0
    logs: list[EpisodeLog] = []
    videos: list[EpisodeVideo] = []
    start = time.perf_counter()
    bar = tqdm(total=episodes, desc=f"eval {env_cfg.task} [{gcfg.operator.kind}]", unit="ep", disable=not progress)

    def collect(log: EpisodeLog, video: EpisodeVideo | None) -> None:
        logs.append(log)
        if video is not None:
            videos.append(video)
        bar.update(1)
        bar.set_postfix(success=f"{sum(e.success for e in logs) / len(logs):.0%}",
                        interventions=sum(e.interventions for e in logs))

    try:
        if workers == 1:
            runner = EpisodeRunner(policy, env_cfg, gcfg, device, render)
            try:
                for job in jobs:
                    collect(*runner.run(*job))
            finally:
                runner.close()
        else:
            threads = threads_per_worker(workers)
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker,
                          initargs=(policy, env_cfg, gcfg, device, threads, render)) as pool:
                for log, video in pool.imap_unordered(_worker_episode, jobs):
                    collect(log, video)
    finally:
        bar.close()
    logs.sort(key=lambda e: e.seed)
    videos.sort(key=lambda v: v.seed)
    return EvalResult(task=env_cfg.task, operator=gcfg.operator.kind, robot=env_cfg.robot, seed_start=seed_start,
                      episodes=logs, seconds=time.perf_counter() - start, gate=asdict(gcfg), videos=videos,
                      fps=round(env_cfg.control_hz))


def make_train_eval_fn(
    env_cfg: EnvConfig, episodes: int = 10, seed_start: int = 100_000
) -> Callable[[torch.nn.Module, int], dict[str, float]]:
    """The training loop's eval hook: autonomous success in-process (no pool, no video, no bar)."""

    def eval_fn(policy: torch.nn.Module, step: int) -> dict[str, float]:
        device = str(next(policy.parameters()).device)
        result = evaluate_policy(policy, env_cfg, episodes, seed_start, None, device, workers=1, progress=False)
        s = result.summary()
        return {"success_rate": s["success_rate"], "success_ci_low": s["success_ci_low"],
                "success_ci_high": s["success_ci_high"], "mean_steps": s["mean_steps"]}

    return eval_fn

