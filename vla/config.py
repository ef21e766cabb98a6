"""Typed schemas of the training app, registered in Hydra's ConfigStore.

``conf/train.yaml`` lists ``train_schema`` first in its defaults, so every group file it composes
(``data/``, ``model/``, ``head/``, ``train/``, ``logger/``) and every command-line override is merged
into these dataclasses: a wrong type (``train.steps=abc``) or an unknown key fails at start-up with
Hydra naming the key. ``__post_init__`` checks run when the config is turned into objects
(``to_app_config``) and say how to fix a bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from envs.config import EnvConfig
from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig

LOGGER_KINDS = ("wandb", "none")


@dataclass
class DataConfig:
    root: str = MISSING  # folder of a LeRobotDataset v3 recorded by scripts/collect.py
    repo_id: str = "local/demos"  # only a label here: the data is always read from ``root``, never the hub
    episodes: list[int] | None = None  # None: all episodes
    val_fraction: float = 0.0  # share of episodes held out for the validation loss (0: no split)
    # Frames live in memory, so a batch is a tensor gather that is faster than handing it over from a
    # worker process; raise this only if profiling shows the main process waiting on data.
    num_workers: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class TrainConfig:
    steps: int = 20_000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile each transformer layer and conv stem (vla/train/compile.py)
    log_every: int = 50
    save_every: int = 5_000  # a checkpoint is also written at the last step
    keep_last: int = 3  # checkpoints kept on disk (0: keep all)
    val_every: int = 0  # validation loss every N steps (needs data.val_fraction > 0; 0: never)
    val_batches: int = 8
    eval_every: int = 0  # rollout success rate every N steps through the eval hook (0: never)
    eval_episodes: int = 10
    init_from: str | None = None  # checkpoint whose weights (and stats) start a fine-tune
    ema_decay: float = 0.0  # checkpoints and evaluations use an average of the weights (0: the raw weights)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "save_every", "val_batches", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "keep_last", "val_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0 (0 disables it), got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"need train.lr > 0, train.weight_decay >= 0, train.grad_clip >= 0; got "
                             f"{self.lr}, {self.weight_decay}, {self.grad_clip}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"train.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | none
    project: str = "vla"
    name: str | None = None  # run name; default: the output folder's name
    # wandb's mode is read from WANDB_MODE (offline unless set): `WANDB_MODE=online python scripts/train.py`

    def __post_init__(self) -> None:
        if self.kind not in LOGGER_KINDS:
            raise ValueError(f"logger.kind={self.kind!r} is not supported; use one of {list(LOGGER_KINDS)}")


@dataclass
class TrainAppConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    env: EnvConfig = field(default_factory=EnvConfig)  # the task the demos show; rollouts run in it
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:<i>
    resume: bool = False  # continue from <output dir>/checkpoints/last (pass the old hydra.run.dir)

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(backbone=self.model, head=self.head)


def register_configs() -> None:
    """Register the schemas; idempotent, so tests and entry points may both call it."""
    ConfigStore.instance().store(name="train_schema", node=TrainAppConfig)


def to_app_config(cfg: DictConfig | dict[str, Any]) -> TrainAppConfig:
    """Composed Hydra config -> TrainAppConfig instance (runs every ``__post_init__`` check)."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    merged = OmegaConf.merge(OmegaConf.structured(TrainAppConfig), node)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
