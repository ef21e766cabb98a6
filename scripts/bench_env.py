"""Environment throughput: control steps per second with cameras, in one process and in N processes.

    python scripts/bench_env.py [--tasks pick_cube pick_place] [--steps 400] [--procs 1 2] [--image-size 96]

Appends a table with the command, machine and date to docs/BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from vla.benchmarks import append_section, machine_description
from vla.reporting import print_grid


def _run(args: tuple[str, int, int, int]) -> float:
    from envs.tabletop import TabletopEnv

    task, steps, image_size, seed = args
    env = TabletopEnv(task=task, image_size=image_size)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    hold = np.append(env.arm_qpos(), 0.0).astype(np.float32)
    start = time.perf_counter()
    for i in range(steps):
        if i % env.max_steps == 0:
            env.reset(seed=seed + i)
        action = hold.copy()
        action[:-1] += rng.normal(0.0, 0.05, action.size - 1).astype(np.float32)
        env.step(action)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["pick_cube", "pick_place", "stack"])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    rows = []
    ctx = mp.get_context("spawn")
    for task in a.tasks:
        for n in a.procs:
            with ctx.Pool(n) as pool:
                rates = pool.map(_run, [(task, a.steps, a.image_size, 1000 * k) for k in range(n)])
            rows.append([task, n, f"{np.mean(rates):.0f}", f"{np.sum(rates):.0f}"])
    header = ["task", "processes", "steps/s per process", "steps/s total"]
    print_grid(f"Env throughput, two {a.image_size}x{a.image_size} cameras", header, rows)
    if not a.no_write:
        append_section(
            "Environment throughput",
            "python scripts/bench_env.py " + " ".join(sys.argv[1:]),
            header, rows,
            note=f"Two {a.image_size}x{a.image_size} cameras rendered every control step (10 Hz, 50 physics "
            f"substeps), MUJOCO_GL=egl. {machine_description()}",
        )


if __name__ == "__main__":
    main()
