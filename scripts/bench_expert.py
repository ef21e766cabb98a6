"""Scripted-expert success rate: N seeded episodes per task and robot, state only, in parallel processes.

    python scripts/bench_expert.py [--tasks pick_cube pick_place stack] [--robots arm6 so101]
                                   [--episodes 200] [--workers 2] [--seed 0] [--cameras] [--no-write]

Episodes use seeds seed .. seed+N-1 (the same seeds on every robot) and run without cameras, unless
--cameras renders both 96x96 cameras every step (to measure steps/s as data collection sees it).
Prints a table per task x robot and appends it, with the command, machine and date, to docs/EXPERTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

from tqdm import tqdm

from envs.robots import ROBOTS
from envs.tasks import TASKS
from vla.reporting import print_grid

DOC = Path(__file__).resolve().parents[1] / "docs" / "EXPERTS.md"
CHUNK = 10  # episodes per job: small enough to balance the processes, large enough to reuse an env


@lru_cache(maxsize=8)
def _env(task: str, robot: str, cameras: bool):  # one environment per (task, robot) and worker process
    from envs.tabletop import CAMERAS, TabletopEnv

    return TabletopEnv(task=task, robot=robot, cameras=CAMERAS if cameras else ())


def _run(job: tuple[str, str, bool, list[int]]) -> tuple[list[tuple[int, bool, int]], float]:
    """(seed, success, episode length) for each seed of the job, and the seconds the episodes took."""
    from envs.expert import ScriptedExpert

    task, robot, cameras, seeds = job
    env = _env(task, robot, cameras)
    results, start = [], time.perf_counter()
    for seed in seeds:
        env.reset(seed=seed)
        expert, steps, success = ScriptedExpert(env), 0, False
        while True:
            _, _, terminated, truncated, info = env.step(expert.act())
            steps, success = steps + 1, bool(info["is_success"])
            if terminated or truncated:
                break
        results.append((seed, success, steps))
    return results, time.perf_counter() - start


def machine() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown CPU")
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["pick_cube", "pick_place", "stack"])
    p.add_argument("--robots", nargs="+", default=["arm6", "so101"])
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cameras", action="store_true", help="render both 96x96 cameras every step")
    p.add_argument("--no-write", action="store_true", help="print the table only, leave docs/EXPERTS.md as is")
    a = p.parse_args()
    if a.episodes < 1 or a.workers < 1:
        p.error(f"--episodes and --workers must be >= 1, got {a.episodes} and {a.workers}")
    for flag, given, known in (("--tasks", a.tasks, TASKS), ("--robots", a.robots, ROBOTS)):
        if unknown := sorted(set(given) - set(known)):
            p.error(f"{flag}: unknown {unknown}; choose from {sorted(known)}")

    header = ["task", "robot", "episodes", "success %", "mean length (steps)", "steps/s per process", "seconds"]
    rows, failures = [], []
    seeds = list(range(a.seed, a.seed + a.episodes))
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for task in a.tasks:
            for robot in a.robots:
                jobs = [(task, robot, a.cameras, seeds[i : i + CHUNK]) for i in range(0, len(seeds), CHUNK)]
                start, results, busy = time.perf_counter(), [], 0.0
                for part, took in tqdm(pool.imap_unordered(_run, jobs), total=len(jobs), desc=f"{task} / {robot}"):
                    results, busy = results + part, busy + took
                seconds = time.perf_counter() - start
                wins, steps = sum(ok for _, ok, _ in results), sum(n for *_, n in results)
                failures += [f"{task}/{robot}: seed {s}" for s, ok, _ in sorted(results) if not ok]
                rows.append([task, robot, len(results), f"{100 * wins / len(results):.1f}",
                             f"{steps / len(results):.1f}", f"{steps / busy:.0f}", f"{seconds:.0f}"])
    views = "two 96x96 cameras rendered every step" if a.cameras else "state only (no cameras)"
    print_grid(f"Scripted expert, {views}", header, rows)
    if failures:
        print("failed episodes:", "; ".join(failures))
    if not a.no_write:
        command = "python scripts/bench_expert.py " + " ".join(sys.argv[1:])
        table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                          + ["| " + " | ".join(map(str, r)) + " |" for r in rows])
        if not DOC.exists():
            DOC.write_text("# Scripted-expert success\n\nEach table: seeded episodes of the closed-loop scripted "
                           "expert (envs/expert.py) per task and robot, with the command, machine and date that "
                           "produced it. Mean length counts control steps (10 Hz) over all episodes; successful "
                           "episodes end at success.\n")
        with DOC.open("a") as f:
            workers = f"{a.workers} worker process" + ("es" if a.workers > 1 else "")
            f.write(f"\n## {dt.date.today().isoformat()}, {views}; {machine()}, {workers}\n\n"
                    f"Command: `{command}`\n\n{table}\n")
            if failures:
                f.write(f"\nFailed: {'; '.join(failures)}.\n")


if __name__ == "__main__":
    main()
