"""One DAgger round (``scripts/finetune.py``): evaluate, collect interventions, fine-tune, re-evaluate.

1. Evaluate the checkpoint under the gate (seeds ``eval_seed_start..``): success, interventions/episode.
2. Collect: run the checkpoint through the control loop under the (simulated) operator on other
   seeds (``collect_seed_start..``, so the evaluation never trains on its own episodes), recording
   every episode with a takeover into a LeRobotDataset with per-frame ``intervention`` flags.
3. Fine-tune the checkpoint with the training loop on demos + the operator's frames (HG-DAgger: the
   operator's actions are the labels; the policy's own frames are left out unless ``policy_frames``).
   Operator frames are drawn ``intervention_weight`` times as often as demo frames, and their action
   chunks end where the operator handed back (``action_is_pad`` after it), so the policy's own actions
   are never targets. The checkpoint's normalisation stats and vocabulary are kept.
   ``previous_interventions`` adds the datasets recorded by earlier rounds (DAgger's aggregation: each
   round trains on every round's operator frames, not only on its own).
4. Re-evaluate the fine-tuned checkpoint on the same evaluation seeds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from envs.config import EnvConfig
from vla.config import LoggerConfig, TrainConfig
from vla.data.dataset import ChunkDataset, FrameStore, load_frames
from vla.data.keyframes import grounding_targets
from vla.eval.compare import intervention_change
from vla.supervision.config import GateConfig
from vla.supervision.control_app import ControlAppConfig, RecordConfig, run_control
from vla.supervision.control_loop import ControlConfig, EpisodeReport, summarize
from vla.supervision.intervention_recorder import read_intervention_flags

log = logging.getLogger(__name__)


@dataclass
class FinetuneAppConfig:
    checkpoint: str = MISSING
    env: EnvConfig = field(default_factory=EnvConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    control: ControlConfig = field(default_factory=lambda: ControlConfig(async_inference=False, realtime=False))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, lr=1e-4, warmup_steps=50))
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(kind="none"))
    demos: str = MISSING  # the demo dataset root the checkpoint was trained on
    demos_repo_id: str = "local/demos"
    interventions: str = MISSING  # dataset root the collected interventions are recorded into
    previous_interventions: list[str] = field(default_factory=list)  # earlier rounds' datasets, aggregated
    collect_episodes: int = 20  # 0: no new collection, fine-tune on previous_interventions (e.g. another recipe)
    collect_seed_start: int = 200_000
    eval_episodes: int = 20
    eval_seed_start: int = 100_000
    eval_workers: int = 2
    intervention_weight: float = 4.0  # operator frames are sampled this many times as often as demo frames
    policy_frames: bool = False  # also train on the policy's own frames of the recorded episodes
    device: str = "auto"  # training device; rollouts run on the CPU
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("eval_episodes", "eval_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.collect_episodes < 0:
            raise ValueError(f"collect_episodes must be >= 0, got {self.collect_episodes}")
        if self.collect_episodes == 0 and not self.previous_interventions:
            raise ValueError("collect_episodes=0 records nothing new, so the round needs recorded takeovers: name "
                             "them, e.g. previous_interventions=[outputs/<earlier round>/interventions]")
        if self.intervention_weight < 1:
            raise ValueError(f"intervention_weight must be >= 1 (1: as often as demo frames), "
                             f"got {self.intervention_weight}")
        if self.interventions in self.previous_interventions:
            raise ValueError(f"previous_interventions lists this round's own dataset {self.interventions}; "
                             "name only the datasets recorded by earlier rounds")
        if self.gate.operator.kind == "terminal":
            raise ValueError("finetune.py runs unattended: use gate=simulated (or gate=auto for no takeovers)")


def register_configs() -> None:
    ConfigStore.instance().store(name="finetune_schema", node=FinetuneAppConfig)


def to_finetune_config(cfg: DictConfig | dict[str, Any]) -> FinetuneAppConfig:
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FinetuneAppConfig), node))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------- data


def is_recorded(root: str | Path) -> bool:
    """Whether a LeRobotDataset has been written at ``root`` (the recorder creates it at the first takeover)."""
    return Path(root, "meta", "info.json").exists()


def next_episode_index(store: FrameStore) -> int:
    """The index ``concat_stores`` gives the first episode appended after ``store``'s."""
    return int(store.episode_index.max()) + 1 if len(store) else 0


def concat_stores(a: FrameStore, b: FrameStore) -> tuple[FrameStore, int]:
    """``a`` then ``b`` in one store (``b``'s episodes renumbered after ``a``'s); returns it and ``b``'s offset."""
    if a.spec.image_keys() != b.spec.image_keys() or (a.spec.state_dim, a.spec.action_dim) != (
            b.spec.state_dim, b.spec.action_dim):
        raise ValueError(f"intervention data features {b.spec} do not match the demos {a.spec}; record them "
                         "with the robot, cameras and image size of the demos")
    tasks = list(dict.fromkeys([*a.tasks, *b.tasks]))
    remap = torch.tensor([tasks.index(t) for t in b.tasks], dtype=torch.long)
    offset = next_episode_index(a)
    store = FrameStore(
        spec=a.spec,
        images={k: torch.cat([a.images[k], b.images[k]]) for k in a.images},
        state=torch.cat([a.state, b.state]),
        action=torch.cat([a.action, b.action]),
        episode_index=torch.cat([a.episode_index, b.episode_index + offset]),
        task_index=torch.cat([a.task_index, remap[b.task_index]]),
        tasks=tasks,
    )
    return store, len(a)


def merge_interventions(recorded: list[tuple[FrameStore, dict[int, Any]]]) -> tuple[FrameStore, dict[int, Any]]:
    """Several rounds' intervention datasets as one store, with their per-episode flags renumbered to match."""
    if not recorded:
        raise ValueError("no intervention datasets to merge")
    store, flags = recorded[0]
    merged = dict(flags)
    for other, other_flags in recorded[1:]:
        shift = next_episode_index(store)
        store, _ = concat_stores(store, other)
        merged.update({e + shift: f for e, f in other_flags.items()})
    return store, merged


def load_interventions(roots: list[str]) -> tuple[FrameStore, dict[int, Any]]:
    """Read and merge the intervention datasets at ``roots`` (this round's and earlier rounds')."""
    if not roots:
        raise ValueError("no intervention data: no takeover was recorded and no previous_interventions are named")
    for root in roots:
        if not is_recorded(root):
            raise FileNotFoundError(f"no intervention dataset at {root}: previous_interventions must name the "
                                    "'interventions' folders of earlier finetune.py runs")
    return merge_interventions([(load_frames(r, "local/interventions"), read_intervention_flags(r)) for r in roots])


class FrameListDataset(ChunkDataset):
    """A ChunkDataset over an explicit list of frame indices (repeats allowed: that is the weighting).

    ``keyframes``: per-frame (frames, valid) keyframe goals as ``gripper_keyframes`` returns them, for a
    policy trained with the keyframe-goal loss; None leaves goals out of the batches. ``keyframe_pixels``:
    per-frame image targets of the grounding slots (``keyframe_pixels``), which need the keyframes too.
    """

    def __init__(self, store: FrameStore, chunk_size: int, frames: torch.Tensor,
                 keyframes: tuple[torch.Tensor, torch.Tensor] | None = None, goal_frames: str = "all",
                 keyframe_pixels: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        super().__init__(store, chunk_size, goal_frames=goal_frames)
        if frames.numel() == 0:
            raise ValueError("no frames to train on")
        if keyframe_pixels is not None and keyframes is None:
            raise ValueError("keyframe_pixels are padded like the keyframe goals; pass the keyframes too")
        self.frames = frames.to(torch.long)
        self.keyframes = keyframes
        self.keyframe_pixels = keyframe_pixels


def demo_keyframes(demos: FrameStore, extra_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keyframe goals of the demos, followed by ``extra_frames`` frames without any.

    Only the demos have them: a recorded intervention episode mixes the policy's gripper commands with
    the operator's, so its first gripper change need not be a grasp of the named object.
    """
    keyframes = ChunkDataset(demos, 1, keyframe_goals=True).keyframes
    assert keyframes is not None  # keyframe_goals=True builds them (or raises, naming the fix)
    frames, valid = keyframes
    pad = torch.zeros(extra_frames, frames.shape[1], dtype=torch.long)
    return torch.cat([frames, pad]), torch.cat([valid, pad.bool()])


def demo_keyframe_pixels(demos: FrameStore, extra_frames: int, env_cfg: EnvConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Grounding targets of the demos (``grounding_targets``), then ``extra_frames`` frames with none in view."""
    pixels, seen = grounding_targets(demos, env_cfg)
    return (torch.cat([pixels, pixels.new_zeros(extra_frames, *pixels.shape[1:])]),
            torch.cat([seen, seen.new_zeros(extra_frames, *seen.shape[1:])]))


def takeover_segment_ends(flags: torch.Tensor, episode_end: torch.Tensor) -> torch.Tensor:
    """For each frame, the exclusive end of its run of equal flags (bounded by its episode end)."""
    n = flags.numel()
    ends = episode_end.clone()
    next_end = n
    for i in range(n - 1, -1, -1):
        if i + 1 < n and (flags[i + 1] != flags[i] or episode_end[i + 1] != episode_end[i]):
            next_end = i + 1
        ends[i] = min(next_end, int(episode_end[i]))
    return ends


@dataclass
class DaggerData:
    dataset: FrameListDataset
    demo_frames: int
    operator_frames: int
    policy_frames: int
    episodes: int


def dagger_dataset(demos: FrameStore, interventions: FrameStore, flags: dict[int, Any], chunk_size: int,
                   intervention_weight: float, policy_frames: bool = False, keyframe_goals: bool = False,
                   goal_frames: str = "all", grounding_env: EnvConfig | None = None) -> DaggerData:
    """Demos + the operator frames of the intervention episodes, weighted; see the module docstring.

    ``keyframe_goals``: batches carry the demos' keyframe goals (vla/data/keyframes.py), for a checkpoint
    with a keyframe-goal head; operator frames have none (``goal_is_pad``). ``grounding_env``: batches also
    carry the demos' grounding targets, projected through that env's cameras (a checkpoint trained with
    model.grounding_loss_weight > 0); operator frames have none.
    """
    store, start = concat_stores(demos, interventions)
    ep = interventions.episode_index
    per_frame = torch.zeros(len(interventions), dtype=torch.bool)
    for e, f in flags.items():
        idx = torch.nonzero(ep == e).flatten()
        if idx.numel() != len(f):
            raise ValueError(f"episode {e} has {idx.numel()} frames but {len(f)} intervention flags")
        per_frame[idx] = torch.as_tensor(f, dtype=torch.bool)
    # Operator chunks stop at the hand-back: what the policy did afterwards is not a label.
    local_end = store.episode_end[start:] - start
    seg_end = takeover_segment_ends(per_frame, local_end)
    store.episode_end[start:] = torch.where(per_frame, seg_end + start, store.episode_end[start:])
    operator = torch.nonzero(per_frame).flatten() + start
    own = torch.nonzero(~per_frame).flatten() + start
    whole, frac = int(intervention_weight), intervention_weight - int(intervention_weight)
    extra = operator[torch.randperm(len(operator), generator=torch.Generator().manual_seed(0))[
        : round(frac * len(operator))]]
    parts = [torch.arange(start), operator.repeat(whole), extra] + ([own] if policy_frames else [])
    keyframes = demo_keyframes(demos, len(interventions)) if keyframe_goals or grounding_env else None
    pixels = demo_keyframe_pixels(demos, len(interventions), grounding_env) if grounding_env else None
    dataset = FrameListDataset(store, chunk_size, torch.cat(parts), keyframes, goal_frames, pixels)
    return DaggerData(dataset, start, len(operator), len(own) if policy_frames else 0, len(flags))


# --------------------------------------------------------------------------------------- round


@dataclass
class DaggerResult:
    before: Any  # vla.eval.rollout.EvalResult
    after: Any | None
    collect: list[EpisodeReport]
    checkpoint: Path | None
    data: DaggerData | None


def finetune(cfg: FinetuneAppConfig, run_dir: str | Path, config_yaml: str) -> tuple[Path | None, DaggerData]:
    """Fine-tune ``cfg.checkpoint`` on demos + recorded interventions with the training loop."""
    from vla.train import checkpoint as ckpt_io
    from vla.train.logger import build_logger
    from vla.train.loop import Trainer, resolve_device

    device = resolve_device(cfg.device)
    demos = load_frames(cfg.demos, cfg.demos_repo_id)
    # This round's dataset exists only if someone took over; earlier rounds' are checked by load_interventions.
    own = [cfg.interventions] if is_recorded(cfg.interventions) else []
    roots = [*own, *cfg.previous_interventions]
    inter, flags = load_interventions(roots)
    policy = ckpt_io.load_policy(cfg.checkpoint, device, spec=demos.spec)
    _, stats = ckpt_io.read_metadata(cfg.checkpoint)
    data = dagger_dataset(demos, inter, flags, policy.cfg.head.chunk_size,
                          cfg.intervention_weight, cfg.policy_frames, keyframe_goals=policy.goal_head is not None,
                          goal_frames=policy.cfg.head.goal_frames,
                          grounding_env=cfg.env if policy.cfg.backbone.grounding_loss_weight > 0 else None)
    log.info("fine-tuning on %d demo frames + %d operator frames (x%g) from %d episodes in %d dataset(s)",
             data.demo_frames, data.operator_frames, cfg.intervention_weight, data.episodes, len(roots))
    logger = build_logger(cfg.logger, run_dir, OmegaConf.to_container(OmegaConf.structured(cfg)))
    try:
        trainer = Trainer(policy, data.dataset, cfg.train, run_dir=run_dir, config_yaml=config_yaml, stats=stats,
                          seed=cfg.seed, device=device, logger=logger)
        result = trainer.fit()
    finally:
        logger.finish()
    return result.checkpoint, data


def run_dagger(cfg: FinetuneAppConfig, run_dir: str | Path, config_yaml: str) -> DaggerResult:
    from vla.eval.rollout import evaluate_policy

    def evaluate(checkpoint: str | Path) -> Any:
        return evaluate_policy(str(checkpoint), cfg.env, cfg.eval_episodes, cfg.eval_seed_start, cfg.gate,
                               device="cpu", workers=cfg.eval_workers)

    before = evaluate(cfg.checkpoint)
    collected: list[EpisodeReport] = []
    if cfg.collect_episodes > 0:
        collect_cfg = ControlAppConfig(checkpoint=cfg.checkpoint, env=cfg.env, gate=cfg.gate, control=cfg.control,
                                       record=RecordConfig(root=cfg.interventions, repo_id="local/interventions"),
                                       episodes=cfg.collect_episodes, seed_start=cfg.collect_seed_start)
        collected = run_control(collect_cfg)
    nothing_recorded = not any(r.takeovers for r in collected) and not is_recorded(cfg.interventions)
    if nothing_recorded and not cfg.previous_interventions:
        log.warning("no takeovers in %d episodes: nothing to learn from, the checkpoint is kept", len(collected))
        return DaggerResult(before, None, collected, None, None)
    checkpoint, data = finetune(cfg, run_dir, config_yaml)
    after = evaluate(checkpoint) if checkpoint is not None else None
    return DaggerResult(before, after, collected, checkpoint, data)


def dagger_rows(result: DaggerResult) -> list[list[str]]:
    """Before/after table rows: success, success without intervention, interventions/episode, autonomy."""

    def row(name: str, ev: Any) -> list[str]:
        m = ev.metrics
        low, high = m["success_ci95"]
        return [name, f"{100 * m['success_rate']:.1f}% [{100 * low:.0f}, {100 * high:.0f}]",
                f"{100 * (m['success_without_intervention'] or 0):.1f}%", f"{m['interventions_per_episode']:.2f}",
                f"{100 * (m['autonomy'] or 0):.1f}%"]

    rows = [row("before", result.before)]
    if result.collect:
        c = summarize(result.collect)
        rows.append(["collection (other seeds)", f"{100 * c['success_rate']:.1f}%", "-",
                     f"{c['interventions_per_episode']:.2f}", f"{100 * c['autonomy']:.1f}%"])
    else:
        rows.append(["collection", "none: earlier rounds' takeovers", "-", "-", "-"])
    if result.after is not None:
        rows.append(row("after one DAgger round", result.after))
        change = intervention_change(result.before.metrics, result.after.metrics)
        gain = result.after.metrics["success_rate"] - result.before.metrics["success_rate"]
        rows.append(["change", f"{100 * gain:+.1f} pts", "-", change, "-"])
    return rows
