"""Is the instruction really used? The same seeded scenes, each under its own and swapped instructions.

    python scripts/bench_language.py --checkpoint outputs/pick_place/train/checkpoints/last
                                     [--task pick_place] [--image-size 64] [--episodes 50]
                                     [--swaps none object target both] [--workers 2] [--out DIR]

For every seed the scene is identical under each swap; only the instruction names another cube
(object), another target -- a pad, or for stacking a cube -- or both. Prints one row per swap:
success under the instruction given, and where the policy went: the cube it lifted and the target it
left that cube on, named vs originally named. Writes grounding.json and grounding.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from envs.config import EnvConfig
from envs.robots import ROBOTS
from envs.tasks import TASKS
from envs.tasks.base import INSTRUCTION_SWAPS
from vla.benchmarks import markdown_table
from vla.eval.grounding import probe_grounding, summarize_grounding
from vla.reporting import print_grid

HEADER = ["instruction", "episodes", "success", "lifted named cube", "lifted originally named cube",
          "left on named target", "left on original target"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint folder (e.g. <run>/checkpoints/last)")
    p.add_argument("--task", default="pick_place", choices=sorted(TASKS))
    p.add_argument("--robot", default="arm6", choices=sorted(ROBOTS))
    p.add_argument("--image-size", type=int, default=64, help="the image size the checkpoint was trained on")
    p.add_argument("--episodes", type=int, default=50, help="scenes; each runs once per swap")
    p.add_argument("--swaps", nargs="+", default=None, choices=INSTRUCTION_SWAPS,
                   help="default: all four (pick_cube, which has no target: none object)")
    p.add_argument("--task-kwargs", default="{}", help='JSON task options, e.g. \'{"distractors": 2}\' for pick_cube')
    p.add_argument("--seed-start", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--out", default="outputs/language", help="folder for grounding.json and grounding.md")
    a = p.parse_args()
    if not Path(a.checkpoint).is_dir():
        p.error(f"--checkpoint {a.checkpoint} is not a folder; pass a run's checkpoints/last (or a step folder)")
    task_kwargs = json.loads(a.task_kwargs)
    if "instruction_swap" in task_kwargs:
        p.error("--task-kwargs: set the swaps with --swaps, not instruction_swap")
    swaps = a.swaps or (["none", "object"] if a.task == "pick_cube" else list(INSTRUCTION_SWAPS))

    env_cfg = EnvConfig(task=a.task, robot=a.robot, image_size=a.image_size, task_kwargs=task_kwargs)
    start = time.perf_counter()
    try:
        episodes = probe_grounding(a.checkpoint, env_cfg, tuple(swaps), a.episodes, a.seed_start, a.workers,
                                   a.device)
    except ValueError as exc:  # an impossible swap or option: name it without a traceback
        p.error(str(exc))
    seconds = time.perf_counter() - start
    summary = summarize_grounding(episodes)
    rows = [[s.swap, s.episodes, s.success, s.lifted_named, s.lifted_original, s.left_on_named, s.left_on_original]
            for s in summary]
    print_grid(f"Instruction swaps on {a.task}: {a.checkpoint} ({seconds / 60:.1f} min)", HEADER,
               [list(map(str, r)) for r in rows])

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/bench_language.py " + " ".join(sys.argv[1:])
    (out / "grounding.json").write_text(json.dumps({
        "command": command, "checkpoint": a.checkpoint, "task": a.task, "seconds": seconds,
        "summary": [s.to_dict() for s in summary], "episodes": [asdict(e) for e in episodes],
    }, indent=1))
    (out / "grounding.md").write_text(f"Command: `{command}`\n\n{markdown_table(HEADER, rows)}\n")
    print(f"report: {out / 'grounding.md'}")


if __name__ == "__main__":
    main()
