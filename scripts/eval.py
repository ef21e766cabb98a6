"""Evaluate a checkpoint under the supervision gate; writes a JSON + Markdown report, plots and videos.

    python scripts/eval.py checkpoint=outputs/train/<date>/<time> env=pick_place gate=simulated episodes=100
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vla.supervision.config import register_configs, to_eval_config

register_configs()


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from dataclasses import replace

    from vla.eval.report import print_results, write_report
    from vla.eval.rollout import evaluate_policy
    from vla.train.logger import build_logger

    c = to_eval_config(cfg)
    out_dir = c.out_dir or HydraConfig.get().runtime.output_dir
    gates = [c.gate] if c.gate.operator.kind == "auto" or not c.also_auto else [
        c.gate, replace(c.gate, operator=replace(c.gate.operator, kind="auto"))]
    results = [evaluate_policy(c.checkpoint, c.env, c.episodes, c.seed_start, g, c.device, c.workers,
                               c.video_episodes, progress=True) for g in gates]
    logger = build_logger(c.logger, out_dir, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    try:
        paths = write_report(results, out_dir, logger, command=" ".join(["python", *sys.argv]))
    finally:
        logger.finish()
    print_results(results, f"Evaluation of {c.checkpoint}")
    print(f"report: {paths['markdown']}")


if __name__ == "__main__":
    main()
