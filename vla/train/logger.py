"""Run loggers: wandb (offline unless WANDB_MODE says otherwise, files inside the run folder) or none.

Offline wandb needs no account and no network; ``wandb sync <run>/wandb/offline-run-*`` uploads a run
later, and ``WANDB_MODE=online`` logs live.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vla.config import LoggerConfig


class RunLogger(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...
    def log_images(self, images: dict[str, Any], step: int) -> None: ...
    def finish(self) -> None: ...


class NullLogger:
    """Logs nothing (the progress bar and the final table still show the run)."""

    def log(self, scalars: dict[str, float], step: int) -> None:
        pass

    def log_images(self, images: dict[str, Any], step: int) -> None:
        pass

    def finish(self) -> None:
        pass


def _as_image(value: Any) -> Any:
    """(3, H, W) / (B, 3, H, W) float tensors in [0, 1] -> an HWC uint8 grid; figures and arrays pass through."""
    if isinstance(value, torch.Tensor):
        x = value.detach().float().cpu()
        if x.ndim == 4:  # a batch: tile side by side
            x = torch.cat(list(x), dim=-1)
        return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    return value


class WandbLogger:
    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any]) -> None:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb  # imported only when used: it is slow to import and spawns a service process

        self._wandb = wandb
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=cfg.project, name=cfg.name or run_dir.name, dir=str(run_dir),
                              config=config)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def log_images(self, images: dict[str, Any], step: int) -> None:
        self.run.log({k: self._wandb.Image(_as_image(v)) for k, v in images.items()}, step=step)

    def finish(self) -> None:
        self.run.finish()


def build_logger(cfg: LoggerConfig, run_dir: str | Path, config: dict[str, Any]) -> RunLogger:
    """The logger ``cfg.kind`` names; ``config`` (the resolved run config) is attached to the run."""
    if cfg.kind == "none":
        return NullLogger()
    if cfg.kind == "wandb":
        return WandbLogger(cfg, Path(run_dir), config)
    raise ValueError(f"logger.kind={cfg.kind!r} is not supported; use 'wandb' or 'none'")
