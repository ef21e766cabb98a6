"""Drive a robot with a checkpoint through the supervised control loop, and report its timing.

    python scripts/control.py checkpoint=outputs/train/<date>/<time> env=pick_place gate=simulated \
        episodes=5 control.hz=10 control.async_inference=true
    python scripts/control.py checkpoint=... control=blocking          # the blocking baseline
    python scripts/control.py checkpoint=... record.root=data/interventions/pick_place gate=simulated

Ctrl-C is an emergency stop (safe stop, then the run ends); a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hydra
from omegaconf import DictConfig

from vla.reporting import print_table
from vla.supervision.control_app import control_table, register_configs, run_control, to_control_config

register_configs()


@hydra.main(config_path="../conf", config_name="control", version_base="1.3")
def main(cfg: DictConfig) -> None:
    app = to_control_config(cfg)
    reports = run_control(app)
    title = f"Control loop: {app.env.task} on {app.robot.kind} ({app.env.robot}), gate={app.gate.operator.kind}"
    print_table(title, control_table(app, reports))


if __name__ == "__main__":
    main()
