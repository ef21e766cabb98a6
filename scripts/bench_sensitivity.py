"""Does a checkpoint look at the scene? Spread of its plan at reset across scenes vs the demos' spread.

    python scripts/bench_sensitivity.py --checkpoint outputs/pick_place/train/checkpoints/last
        --data-root data/demo_pick_place_64 --repo-id local/demo_pick_place [--task pick_place]
        [--image-size 64] [--scenes 40] [--seed-start 100000] [--goal-data-root data/heldout_pick_place_64]

At reset the arm is always in its home pose, so only the cameras and the instruction differ between
scenes. Prints, per action dimension, the spread (std across scenes) of the action the policy plans at the
end of its first chunk, the demos' spread at the same step of their episodes, and the ratio: near 1 the
policy adapts its plan to the scene as the demos do; near 0 it plans the same motion whatever it sees.
For a checkpoint trained with the keyframe-goal loss it adds the goal head's error at the demos' first
frames beside a scene-blind guess; on demos the checkpoint trained on that measures fit as much as finding
the named objects, so ``--goal-data-root`` takes held-out demos. See vla/eval/sensitivity.py.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from envs.config import EnvConfig
from envs.tasks import TASKS
from vla.data.dataset import load_frames
from vla.eval.sensitivity import demo_spread, keyframe_goal_error, planned_spread
from vla.reporting import print_grid
from vla.train.checkpoint import load_policy, read_metadata


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True, help="the demos the checkpoint was trained on")
    p.add_argument("--repo-id", default="local/demos")
    p.add_argument("--goal-data-root", default=None,
                   help="demos for the keyframe-goal table (default: --data-root). Demos the checkpoint did not "
                        "train on (collect.py with another seed) measure finding the objects, not remembering scenes")
    p.add_argument("--task", default="pick_place", choices=sorted(TASKS))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--seed-start", type=int, default=100_000)
    a = p.parse_args()
    if not Path(a.checkpoint).is_dir():
        p.error(f"--checkpoint {a.checkpoint} is not a folder; pass a run's checkpoints/last (or a step folder)")

    meta, _ = read_metadata(a.checkpoint)
    horizon = int(meta["cfg"]["head"]["chunk_size"])
    names = meta["spec"]["action_names"] or [f"action {i}" for i in range(meta["spec"]["action_dim"])]
    seeds = range(a.seed_start, a.seed_start + a.scenes)
    env_cfg = EnvConfig(task=a.task, image_size=a.image_size)
    policy = planned_spread(a.checkpoint, env_cfg, seeds, step=horizon - 1)
    store = load_frames(a.data_root, a.repo_id)
    demos = demo_spread(store, step=horizon - 1)
    rows = [[name, f"{pol:.3f}", f"{dem:.3f}", f"{pol / dem:.2f}" if dem > 1e-3 else "n/a (demos do not vary)"]
            for name, pol, dem in zip(names, policy, demos, strict=True)]
    print_grid(f"Spread across {a.scenes} scenes of the action {horizon - 1} steps after reset: {a.checkpoint}",
               ["action", "policy plan (std)", "demos (std)", "policy / demos"], rows)
    if meta["cfg"]["head"].get("goal_loss_weight", 0.0) > 0:
        goal_root = a.goal_data_root or a.data_root
        if goal_root != a.data_root:
            store = load_frames(goal_root, a.repo_id)
        error, blind = keyframe_goal_error(load_policy(a.checkpoint, spec=store.spec), store)
        state_names = meta["spec"]["state_names"] or [f"state {i}" for i in range(meta["spec"]["state_dim"])]
        rows = [[name, *(f"{v:.2f}" for v in (error[0, i], blind[0, i], error[1, i], blind[1, i]))]
                for i, name in enumerate(state_names)]
        print_grid(f"Keyframe-goal error at the first frame of {len(store.episode_ids)} demos in {goal_root} "
                   "(normalised state units)",
                   ["joint", "grasp: policy", "grasp: scene-blind", "release: policy", "release: scene-blind"], rows)


if __name__ == "__main__":
    main()
