"""The one training loop: AdamW + warmup/cosine, grad clipping, bf16 autocast on CUDA, optional
torch.compile, DDP under torchrun, periodic validation / rollout evaluation, atomic checkpoints and an
exact resume (weights, optimizer, schedule, RNG streams and data position all come back).

Image augmentation is not applied here: the policy augments its own camera inputs in training mode
(``model.aug_*``), so every caller of ``policy.forward`` trains on the same distribution.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from omegaconf import OmegaConf
from torch import nn
from tqdm.auto import tqdm

from vla.config import TrainAppConfig, TrainConfig
from vla.data.dataset import (
    ChunkBatchSampler,
    ChunkDataset,
    images_to_float,
    load_frames,
    make_loader,
    split_episodes,
)
from vla.data.keyframes import keyframe_dataset_options
from vla.data.stats import Stats, compute_stats, relative_action_stats
from vla.reporting import print_table
from vla.train import checkpoint as ckpt_io
from vla.train.checkpoint import get_rng_state, isolated_rng, set_rng_state
from vla.train.compile import compile_regions
from vla.train.ema import WeightEMA
from vla.train.logger import NullLogger, RunLogger, build_logger
from vla.train.optim import build_optimizer, build_scheduler
from vla.types import FeatureSpec

log = logging.getLogger(__name__)

EvalFn = Callable[[nn.Module, int], dict[str, float]]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(torch_dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this process's GPU (LOCAL_RANK under torchrun) when CUDA is available, else the CPU."""
    local = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    if name == "auto":
        name = local if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = local
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=auto or device=cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


@dataclass
class TrainResult:
    steps: int
    final_loss: float  # mean training loss of the last logging window
    samples_per_s: float
    wall_time_s: float
    checkpoint: Path | None
    metrics: dict[str, float]  # last logged validation / evaluation figures


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    moved = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return images_to_float(moved)  # uint8 frames travel at a quarter of the bytes, then convert on device


def _mean_over_ranks(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    if not info.enabled or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    torch_dist.all_reduce(t)
    return dict(zip(values, (t / info.world_size).tolist(), strict=True))


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state, so a resumed DDP run restores each rank's own dropout/augmentation stream."""
    state = get_rng_state()
    if not info.enabled:
        return [state]
    states: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(states, state)
    return states


def _log_chunk_plot(logger: RunLogger, pred: torch.Tensor, target: torch.Tensor, names: tuple[str, ...],
                    step: int) -> None:
    """Predicted vs recorded action chunk of one validation sample, one panel per action dim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = pred.shape[-1]
    fig, axes = plt.subplots(1, dims, figsize=(2.2 * dims, 2.2), squeeze=False)
    for d, ax in enumerate(axes[0]):
        ax.plot(target[:, d].float().cpu(), label="demo")
        ax.plot(pred[:, d].float().cpu(), "--", label="policy")
        ax.set_title(names[d] if d < len(names) else f"a{d}", fontsize=8)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    logger.log_images({"val/chunk": fig}, step)
    plt.close(fig)


class Trainer:
    """Holds the state one run mutates; ``fit()`` runs from the current step to ``cfg.steps``."""

    def __init__(self, policy: nn.Module, data: ChunkDataset, cfg: TrainConfig, *, run_dir: str | Path,
                 config_yaml: str, stats: Stats, seed: int, device: torch.device,
                 logger: RunLogger | None = None, val_data: ChunkDataset | None = None,
                 eval_fn: EvalFn | None = None, num_workers: int = 0, dist_info: DistInfo | None = None) -> None:
        self.policy, self.data, self.cfg, self.run_dir = policy.to(device), data, cfg, Path(run_dir)
        self.config_yaml, self.stats, self.seed, self.device = config_yaml, stats, seed, device
        self.logger, self.val_data, self.eval_fn = logger or NullLogger(), val_data, eval_fn
        self.num_workers, self.info = num_workers, dist_info or DistInfo()
        self.optimizer = build_optimizer(policy, cfg.lr, cfg.weight_decay, (cfg.betas[0], cfg.betas[1]))
        self.scheduler = build_scheduler(self.optimizer, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        self.step, self.batches_seen, self.metrics = 0, 0, {}
        self.last_saved: Path | None = None
        self.ema = WeightEMA(self.policy, cfg.ema_decay) if cfg.ema_decay > 0 else None
        # Each rank draws its own dropout/augmentation noise; weights are the same (DDP broadcasts rank 0's).
        seed_everything(seed + self.info.rank)

    # ---------------------------------------------------------------- resume
    def resume(self) -> None:
        """Continue from ``<run_dir>/checkpoints/last``: weights, optimizer, schedule, RNG, data position."""
        found = ckpt_io.last_checkpoint(self.run_dir)
        if found is None:
            raise FileNotFoundError(
                f"resume=true but {str(self.run_dir)!r} holds no checkpoint; pass the output folder of the run "
                "to continue as hydra.run.dir=<outputs/train/DATE/TIME>, or drop resume=true")
        state = ckpt_io.load_train_state(found)
        ckpt_io.load_weights(self.policy, found)
        if "raw_weights" in state:  # the checkpoint deploys averaged weights; training goes on from the raw ones
            if self.ema is not None:
                self.ema.load(self.policy.state_dict(), state["ema"])
            self.policy.load_state_dict(state["raw_weights"])
        elif self.ema is not None:
            log.warning("%s holds no weight average; train.ema_decay starts one from its weights", found)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.batches_seen = int(state["step"]), int(state["sampler"]["batches_seen"])
        rng = state["rng"]
        if len(rng) == self.info.world_size:
            set_rng_state(rng[self.info.rank])
        else:  # a different number of ranks cannot replay the old streams; keep them distinct and seeded
            log.warning("resuming on %d rank(s) from a %d-rank run: RNG streams are re-seeded",
                        self.info.world_size, len(rng))
            seed_everything(self.seed + self.step + self.info.rank)
        self.last_saved = found
        if self.info.is_main:
            log.info("resumed from %s at step %d", found, self.step)

    # ----------------------------------------------------------------- pieces
    def _batches(self) -> Iterator[dict[str, Any]]:
        sampler = ChunkBatchSampler(len(self.data), self.cfg.batch_size, self.seed, self.info.rank,
                                    self.info.world_size, start_batch=self.batches_seen)
        loader = make_loader(self.data, sampler, self.num_workers, pin_memory=self.device.type == "cuda")
        for batch in loader:
            yield _to_device(batch, self.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        on = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on)

    def save(self) -> Path | None:
        rng = _gather_rng(self.info)
        path = None
        if self.info.is_main:
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "step": self.step, "sampler": {"batches_seen": self.batches_seen}, "rng": rng}
            if self.ema is not None:
                state["raw_weights"] = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
                state["ema"] = self.ema.state_dict()
            with self._deployed_weights():
                path = ckpt_io.save_checkpoint(self.run_dir, self.step, self.policy, config_yaml=self.config_yaml,
                                               stats=self.stats, train_state=state, keep_last=self.cfg.keep_last)
            self.last_saved = path
        if self.info.enabled:
            torch_dist.barrier()
        return path

    def _deployed_weights(self) -> contextlib.AbstractContextManager:
        """The weights a checkpoint ships and evaluation measures: the average when there is one."""
        return self.ema.applied(self.policy) if self.ema is not None else contextlib.nullcontext()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss over the first ``val_batches`` validation batches (a fixed set, so curves compare)."""
        assert self.val_data is not None
        bs = min(self.cfg.batch_size, len(self.val_data) // self.info.world_size)
        sampler = ChunkBatchSampler(len(self.val_data), bs, self.seed, self.info.rank, self.info.world_size)
        loader = make_loader(self.val_data, sampler)
        totals: dict[str, float] = {}
        self.policy.eval()
        with isolated_rng(), self._deployed_weights():
            for i, batch in zip(range(self.cfg.val_batches), loader, strict=False):
                batch = _to_device(batch, self.device)
                with self._autocast():
                    loss, terms = self.policy(batch)
                for k, v in {"loss": loss.item(), **terms}.items():
                    totals[k] = totals.get(k, 0.0) + v
                if i == 0 and self.info.is_main and not isinstance(self.logger, NullLogger):
                    pred = self.policy.predict_chunk(batch)[0]
                    _log_chunk_plot(self.logger, pred, batch["action"][0], self.policy.spec.action_names,
                                    self.step)
        self.policy.train()
        n = min(self.cfg.val_batches, len(sampler))
        return _mean_over_ranks({f"val/{k}": v / n for k, v in totals.items()}, self.info, self.device)

    def evaluate(self) -> dict[str, float]:
        """Rollouts through the caller's hook, on rank 0 only; other ranks wait at the barrier."""
        metrics: dict[str, float] = {}
        if self.info.is_main and self.eval_fn is not None:
            self.policy.eval()
            # Rollouts must not shift the training noise, or resume would diverge.
            with isolated_rng(), self._deployed_weights():
                metrics = {f"eval/{k}": float(v) for k, v in self.eval_fn(self.policy, self.step).items()}
            self.policy.train()
        if self.info.enabled:
            torch_dist.barrier()
        return metrics

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        if cfg.compile:
            regions = compile_regions(self.policy)
            log.info("torch.compile: %d regions (transformer layers and conv stems)", len(regions))
        model: nn.Module = self.policy
        if info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.policy.train()
        params = [p for p in self.policy.parameters() if p.requires_grad]
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        start_step, start_time = self.step, time.perf_counter()
        window: dict[str, float] = {}
        window_steps, window_start, logged_loss = 0, start_time, float("nan")
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True, disable=not info.is_main)
        batches = self._batches()
        while self.step < cfg.steps:
            batch = next(batches)
            if self.step == 0 and info.is_main:
                self.logger.log_images({f"inputs/{k}": v[:4] for k, v in batch.items() if "images" in k}, 0)
            with self._autocast():
                loss, terms = model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            lr = self.scheduler.get_last_lr()[0]  # the rate this update uses
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            self.batches_seen += 1
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {self.step} (terms {terms}); lower "
                                         "train.lr or raise train.warmup_steps, then resume=true")
            for k, v in {"loss": loss_value, **terms, "grad_norm": grad_norm.item()}.items():
                window[k] = window.get(k, 0.0) + float(v)
            window_steps += 1
            bar.update(1)
            last = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or last:
                now = time.perf_counter()
                scalars = {f"train/{k}": v / window_steps for k, v in window.items()}
                scalars["train/lr"] = lr
                scalars["train/samples_per_s"] = window_steps * cfg.batch_size * info.world_size / (now - window_start)
                if info.is_main:
                    self.logger.log(scalars, self.step)
                logged_loss = scalars["train/loss"]
                bar.set_postfix(loss=f"{logged_loss:.4f}", lr=f"{lr:.2e}")
                window, window_steps, window_start = {}, 0, now
            if self.val_data is not None and cfg.val_every and (self.step % cfg.val_every == 0 or last):
                self._record(self.validate())
            if self.step % cfg.save_every == 0 or last:
                self.save()  # before the rollouts: a crash there must not lose this step
            if self.eval_fn is not None and cfg.eval_every and (self.step % cfg.eval_every == 0 or last):
                self._record(self.evaluate())
        bar.close()
        wall = time.perf_counter() - start_time
        done = self.step - start_step
        result = TrainResult(self.step, logged_loss, done * cfg.batch_size * info.world_size / max(wall, 1e-9),
                             wall, self.last_saved, dict(self.metrics))
        if info.is_main:
            print_summary(result)
        return result

    def _record(self, metrics: dict[str, float]) -> None:
        if metrics and self.info.is_main:
            self.logger.log(metrics, self.step)
            log.info("step %d: %s", self.step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        self.metrics.update(metrics)


def print_summary(result: TrainResult) -> None:
    rows = {"steps": result.steps, "final loss": f"{result.final_loss:.4f}",
            "samples/s": f"{result.samples_per_s:.1f}", "wall time": f"{result.wall_time_s:.1f} s"}
    rows.update({k: f"{v:.4g}" for k, v in result.metrics.items()})
    rows["checkpoint"] = result.checkpoint or "-"
    print_table("Training", rows)


def run_training(cfg: TrainAppConfig, run_dir: str | Path, config_yaml: str,
                 eval_fn: EvalFn | None = None) -> TrainResult:
    """Everything ``scripts/train.py`` does: data, stats, policy, logger, resume / init_from, fit."""
    from vla.policy import VLAPolicy  # the model stack is imported only when a run is built
    from vla.tokenizer import build_vocab

    device = resolve_device(cfg.device)
    info = init_distributed(device)
    seed_everything(cfg.seed)  # same init on every rank; DDP checks nothing, so keep them identical
    store = load_frames(cfg.data.root, cfg.data.repo_id, cfg.data.episodes)
    train_eps, val_eps = split_episodes(store.episode_ids, cfg.data.val_fraction, cfg.seed)
    goals = keyframe_dataset_options(store, cfg.env, cfg.head.goal_loss_weight, cfg.model.grounding_loss_weight,
                                     cfg.head.goal_frames)
    train_data = ChunkDataset(store, cfg.head.chunk_size, train_eps, uint8_images=True, **goals)
    val_data = ChunkDataset(store, cfg.head.chunk_size, val_eps, uint8_images=True, **goals) if val_eps else None
    if cfg.train.init_from:
        # A fine-tune keeps the checkpoint's vocabulary and normalisation: its weights were learned in them.
        meta, stats = ckpt_io.read_metadata(cfg.train.init_from)
        ckpt_io.check_compatible(FeatureSpec.from_dict(meta["spec"]), store.spec)
        vocab = list(meta["vocab"])
    else:
        stats = compute_stats(store.state[train_data.frames], store.action[train_data.frames], store.spec)
        if cfg.head.relative_actions:
            stats = relative_action_stats(stats, store.state, store.action, store.episode_end, train_data.frames,
                                          cfg.head.chunk_size, store.spec)
        vocab = build_vocab(store.tasks)
    policy = VLAPolicy(cfg.policy_config(), store.spec, vocab, stats)
    run_dir = Path(run_dir)
    logger = build_logger(cfg.logger, run_dir, OmegaConf.to_container(OmegaConf.structured(cfg))) \
        if info.is_main else NullLogger()
    trainer = Trainer(policy, train_data, cfg.train, run_dir=run_dir, config_yaml=config_yaml, stats=stats,
                      seed=cfg.seed, device=device, logger=logger, val_data=val_data, eval_fn=eval_fn,
                      num_workers=cfg.data.num_workers, dist_info=info)
    if cfg.resume:
        trainer.resume()
    elif cfg.train.init_from:
        ckpt_io.load_weights(policy, cfg.train.init_from)  # its normaliser buffers come along
    if info.is_main:
        log.info("%d train / %d val episodes, %d frames; policy %.2f M parameters on %s", len(train_eps),
                 len(val_eps), len(store), policy.num_parameters() / 1e6, device)
    try:
        return trainer.fit()
    finally:
        logger.finish()
        if info.enabled:
            torch_dist.destroy_process_group()
