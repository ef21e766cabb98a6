"""Is the instruction really used? The same seeded scenes, each under its own and swapped instructions.

    python scripts/bench_language.py --checkpoint outputs/pick_place/train/checkpoints/last
                                     [--task pick_place] [--image-size 64] [--episodes 50]
                                     [--swaps none object target both] [--workers 2] [--out DIR]

For every seed the scene is identical under each swap; only the instruction names another cube
(object), another pad (target) or both. Prints one row per swap: success under the instruction
given, and where the policy went: the cube it lifted and the target it left that cube on, named vs
originally named. Writes grounding.json and grounding.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from envs.config import EnvConfig
from envs.tasks.base import INSTRUCTION_SWAPS
from vla.eval.grounding import probe_grounding, summarize_grounding
from vla.reporting import print_grid

HEADER = ["instruction", "episodes", "success", "lifted named cube", "lifted originally named cube",
          "left on named target", "left on original target"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint folder (e.g. <run>/checkpoints/last)")
    p.add_argument("--task", default="pick_place", choices=["pick_place", "stack", "pick_cube"])
    p.add_argument("--image-size", type=int, default=64, help="the image size the checkpoint was trained on")
    p.add_argument("--episodes", type=int, default=50, help="scenes; each runs once per swap")
    p.add_argument("--swaps", nargs="+", default=list(INSTRUCTION_SWAPS), choices=INSTRUCTION_SWAPS)
    p.add_argument("--task-kwargs", default="{}", help='JSON task options, e.g. \'{"distractors": 2}\' for pick_cube')
    p.add_argument("--seed-start", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default="outputs/language", help="folder for grounding.json and grounding.md")
    a = p.parse_args()
    if not Path(a.checkpoint).is_dir():
        p.error(f"--checkpoint {a.checkpoint} is not a folder; pass a run's checkpoints/last (or a step folder)")

    env_cfg = EnvConfig(task=a.task, image_size=a.image_size, task_kwargs=json.loads(a.task_kwargs))
    start = time.perf_counter()
    episodes = probe_grounding(a.checkpoint, env_cfg, tuple(a.swaps), a.episodes, a.seed_start, a.workers)
    seconds = time.perf_counter() - start
    rows = [[s.swap, s.episodes, str(s.success), str(s.lifted_named), str(s.lifted_original),
             str(s.left_on_named), str(s.left_on_original)] for s in summarize_grounding(episodes)]
    print_grid(f"Instruction swaps on {a.task}: {a.checkpoint} ({seconds / 60:.1f} min)", HEADER, rows)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/bench_language.py " + " ".join(sys.argv[1:])
    (out / "grounding.json").write_text(json.dumps({
        "command": command, "checkpoint": a.checkpoint, "task": a.task, "seconds": seconds,
        "summary": [s.to_dict() for s in summarize_grounding(episodes)],
        "episodes": [vars(e) for e in episodes],
    }, indent=1))
    table = "\n".join(["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
                      + ["| " + " | ".join(map(str, r)) + " |" for r in rows])
    (out / "grounding.md").write_text(f"Command: `{command}`\n\n{table}\n")
    print(f"report: {out / 'grounding.md'}")


if __name__ == "__main__":
    main()
