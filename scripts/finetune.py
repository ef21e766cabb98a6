"""One DAgger round: evaluate, collect interventions under the simulated operator, fine-tune, re-evaluate.

    python scripts/finetune.py checkpoint=outputs/train/<date>/<time> env=pick_place
    python scripts/finetune.py checkpoint=... collect_episodes=50 train.steps=2000 eval_episodes=100
    python scripts/finetune.py checkpoint=<round 1>/checkpoints/last previous_interventions=[<round 1>/interventions]

Prints a before/after table (success, interventions per episode) and the fine-tuned checkpoint.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vla.reporting import print_grid, print_table
from vla.supervision.dagger import dagger_rows, register_configs, run_dagger, to_finetune_config

register_configs()


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    app = to_finetune_config(cfg)
    run_dir = HydraConfig.get().runtime.output_dir
    result = run_dagger(app, run_dir, OmegaConf.to_yaml(cfg, resolve=True))
    header = ["", "success [95% CI]", "without intervention", "interventions / episode", "autonomy"]
    print_grid(f"DAgger round: {app.env.task}, gate={app.gate.operator.kind}", header, dagger_rows(result))
    rows = {"intervention data": app.interventions, "fine-tuned checkpoint": result.checkpoint or "none (kept)"}
    if app.previous_interventions:
        rows["earlier rounds' data"] = ", ".join(app.previous_interventions)
    if result.data is not None:
        rows["trained on"] = (f"{result.data.demo_frames} demo + {result.data.operator_frames} operator frames "
                              f"(x{app.intervention_weight:g}) from {result.data.episodes} episodes")
    print_table("Fine-tune", rows)


if __name__ == "__main__":
    main()
