"""Where do a checkpoint's grounding slots look? Peak hits on the named cube and pad, and a picture.

    python scripts/bench_slot_hits.py --checkpoint outputs/pick_place_ground/train/checkpoints/last
        [--image-size 64] [--scenes 100] [--seed-start 100000] [--png docs/figures/grounding_slots.png]

For each scene (reset, seeds disjoint from the demos'), each slot's attention peak per camera is assigned to
the nearest projected cube or pad (vla/eval/slot_hits.py); the "random cell" row is the chance level, the
share of grid cells nearest each kind. A slot that finds the object the instruction
names lands on "named cube" (or "named pad") far above the one-in-three of a slot that finds only "a cube".
The PNG shows the first scenes: each camera image, then each slot's map over it, with the named cube
(circle) and named pad (square) marked.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from envs.camera import project_to_pixels
from envs.config import EnvConfig, make_env
from vla.eval.rollout import env_feature_spec, obs_to_batch
from vla.eval.slot_hits import KINDS, grounding_hits
from vla.policy import VLAPolicy
from vla.reporting import print_grid
from vla.train.checkpoint import load_policy


@torch.no_grad()
def draw(policy: VLAPolicy, env_cfg: EnvConfig, seeds: range, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = make_env(env_cfg)
    base = env.unwrapped
    cams, k = tuple(policy.spec.cameras), policy.cfg.backbone.grounding_slots
    fig, axes = plt.subplots(len(seeds), len(cams) * (1 + k), figsize=(2.2 * len(cams) * (1 + k), 2.4 * len(seeds)),
                             squeeze=False)
    try:
        for row, seed in enumerate(seeds):
            obs, _ = env.reset(seed=seed)
            maps = policy.grounding_maps(obs_to_batch(obs, policy.device))[0].float().cpu().numpy()
            axes[row, 0].set_title(obs["task"], fontsize=7, loc="left")
            for c, cam in enumerate(cams):
                image = obs[f"observation.images.{cam}"]
                named = np.stack([base.cube_pos(base.episode.object_index), base.pad_pos(base.episode.target_index)])
                px, vis = project_to_pixels(base.model, base.data, base.camera_id(cam), named, base.image_size)
                for j in range(1 + k):
                    ax = axes[row, c * (1 + k) + j]
                    ax.imshow(image)
                    if j:
                        size = base.image_size
                        ax.imshow(maps[c, j - 1], cmap="magma", alpha=0.6, extent=(0, size, size, 0),
                                  interpolation="nearest")
                    for (x, y), ok, marker in zip(px, vis, ("o", "s"), strict=True):
                        if ok:
                            ax.plot(x, y, marker, mfc="none", mec="cyan", ms=8, mew=1.2)
                    ax.set_xticks([]), ax.set_yticks([])
                    if row == 0 and j:
                        ax.set_xlabel(f"{cam}, slot {j - 1}", fontsize=7)
                        ax.xaxis.set_label_position("top")
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--scenes", type=int, default=100)
    p.add_argument("--seed-start", type=int, default=100_000)
    p.add_argument("--png", type=Path, default=None, help="where to draw the first --draw scenes' maps")
    p.add_argument("--draw", type=int, default=4)
    a = p.parse_args()
    if not Path(a.checkpoint).is_dir():
        p.error(f"--checkpoint {a.checkpoint} is not a folder; pass a run's checkpoints/last (or a step folder)")
    env_cfg = EnvConfig(task="pick_place", image_size=a.image_size)
    env = make_env(env_cfg)
    policy = load_policy(a.checkpoint, spec=env_feature_spec(env))
    env.close()
    if not policy.cfg.backbone.grounding_slots:
        p.error(f"{a.checkpoint} has no grounding slots; it was trained with model.grounding_slots=0")
    hits = grounding_hits(policy, env_cfg, range(a.seed_start, a.seed_start + a.scenes))
    rows = []
    for cam in hits.cameras:
        seen = hits.scenes(cam, 0)
        if seen:
            share = hits.cell_share[cam]
            rows.append([cam, "random cell", seen, *(f"{100 * share[kind] / seen:.0f}%" for kind in KINDS), "", ""])
        for slot in range(hits.n_slots):
            n = hits.scenes(cam, slot)
            if not n:
                rows.append([cam, slot, 0, *("n/a",) * (len(KINDS) + 2)])
                continue
            counts = hits.counts[(cam, slot)]
            median_cube, median_pad = np.median(hits.dist_cube[(cam, slot)]), np.median(hits.dist_pad[(cam, slot)])
            rows.append([cam, slot, n, *(f"{100 * counts[kind] / n:.0f}% ({counts[kind]})" for kind in KINDS),
                         f"{median_cube:.1f}", f"{median_pad:.1f}"])
    print_grid(f"Grounding-slot peaks at reset over {a.scenes} scenes (seeds from {a.seed_start}): {a.checkpoint}",
               ["camera", "slot", "scenes", *(f"nearest: {kind}" for kind in KINDS),
                "px to named cube (median)", "px to named pad (median)"], rows)
    if a.png is not None:
        draw(policy, env_cfg, range(a.seed_start, a.seed_start + a.draw), a.png)
        print(f"wrote {a.png}")


if __name__ == "__main__":
    main()
