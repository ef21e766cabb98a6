"""Train a VLA policy on recorded demos (imitation learning).

    python scripts/train.py env=pick_cube model=tiny head=l1
    python scripts/train.py data.root=data/pick_cube train=debug           # 2 steps, writes a checkpoint
    torchrun --nproc_per_node=4 scripts/train.py model=small               # DDP
    python scripts/train.py hydra.run.dir=outputs/train/<date>/<time> resume=true
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")  # in-training rollouts render headless
os.environ.setdefault("WANDB_MODE", "offline")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vla.config import TrainAppConfig, register_configs, to_app_config
from vla.train.loop import EvalFn, run_training

log = logging.getLogger("train")
register_configs()


def eval_hook(cfg: TrainAppConfig) -> EvalFn | None:
    """Rollout success in cfg.env every train.eval_every steps, when the eval package is installed."""
    if cfg.train.eval_every <= 0:
        return None
    try:
        from vla.eval.rollout import evaluate_policy
    except ImportError:
        log.info("train.eval_every=%d but vla.eval.rollout is not available: no in-training rollouts",
                 cfg.train.eval_every)
        return None

    def run(policy, step: int) -> dict[str, float]:
        # Fixed evaluation seeds (evaluate_policy's default start, disjoint from the demos'): curves compare.
        result = evaluate_policy(policy, cfg.env, cfg.train.eval_episodes, device=str(policy.device), progress=False)
        return result.summary()

    return run


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    app = to_app_config(cfg)
    run_training(app, HydraConfig.get().runtime.output_dir, OmegaConf.to_yaml(cfg, resolve=True), eval_hook(app))


if __name__ == "__main__":
    main()
