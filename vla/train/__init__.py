"""Training: one generic loop, AdamW + warmup/cosine, atomic self-describing checkpoints, run loggers."""

from vla.train.checkpoint import (
    IncompatibleCheckpointError,
    check_compatible,
    last_checkpoint,
    load_policy,
    save_checkpoint,
)
from vla.train.loop import EvalFn, Trainer, TrainResult, run_training

__all__ = [
    "EvalFn",
    "IncompatibleCheckpointError",
    "TrainResult",
    "Trainer",
    "check_compatible",
    "last_checkpoint",
    "load_policy",
    "run_training",
    "save_checkpoint",
]
