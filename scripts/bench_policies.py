"""Policy comparison: LeRobot's ACT and Diffusion Policy against our VLA (l1 and flow heads), same demos.

    python scripts/bench_policies.py [--tasks pick_cube pick_place] [--methods act diffusion vla_l1 vla_flow]
        [--steps 3000] [--batch-size 32] [--episodes 50] [--data-root pick_cube=data/pick_cube ...]
        [--set diffusion.num_inference_steps=10 ...] [--device auto] [--jobs 1] [--no-write]
        [--demos 100 --writers 1 --demo-options miss.prob=0.4 ...]

Every method trains on the same LeRobotDataset with the same gradient steps, batch size and frame order
(vla/baselines/fit.py), then is evaluated on the same seeded episodes through vla.eval.rollout's
``evaluate_policy`` under the auto gate. A missing dataset is recorded first (``--demos`` scripted-expert
episodes). Reports success with Wilson 95% intervals, training samples/s and batch-1 chunk latency in one
table, appended with this command and the machine to docs/BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from vla.baselines.compare import (
    CompareSettings,
    MethodResult,
    compare_concurrently,
    compare_on_task,
    demo_config,
    ensure_demos,
)
from vla.baselines.figure import plot_success
from vla.baselines.methods import METHODS, parse_overrides
from vla.benchmarks import append_section, machine_description
from vla.eval.rollout import threads_per_worker
from vla.model_config import HeadConfig
from vla.reporting import print_grid
from vla.train.loop import resolve_device

NOTE = (
    "ACT and Diffusion Policy take no instruction (LeRobot's implementations have no language input): on "
    "PickPlace, where the instruction names the cube and the pad, they can only guess; PickCube has a single "
    "cube, so the instruction carries no information there and that comparison is on equal terms. Each "
    "method uses its own normalisation and optimiser recipe (LeRobot presets for ACT and Diffusion Policy, "
    "random-init backbones since nothing is downloaded; the project's TrainConfig for ours), warm-up capped "
    "at a tenth of the steps; Diffusion Policy sees one observation step like the others; every method "
    "executes {n_exec} actions per chunk."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["pick_cube", "pick_place"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--steps", type=int, default=3000, help="gradient steps, the same for every method")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes per task and method")
    p.add_argument(
        "--data-root",
        nargs="*",
        default=[],
        metavar="TASK=PATH",
        help="dataset of a task (default data/<task>); recorded there when missing",
    )
    p.add_argument("--demos", type=int, default=100, help="episodes to record when a dataset is missing")
    p.add_argument("--writers", type=int, default=1,
                   help="processes that each record and write a shard of missing demos (many-core hosts)")
    p.add_argument("--demo-options", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="recording settings of missing demos, as scripts/collect.py takes them, "
                        "e.g. noise.std=0.01 noise.prob=0.3 miss.prob=0.4")
    p.add_argument(
        "--image-size",
        type=int,
        default=96,
        help="camera size of recorded demos (existing data keeps its own)",
    )
    p.add_argument("--preset", default="tiny", choices=["tiny", "small"], help="backbone preset of our VLA")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        dest="overrides",
        metavar="METHOD.FIELD=VALUE",
        help="e.g. diffusion.num_inference_steps=10 act.optimizer_lr=1e-4 vla.train.lr=1e-3",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:<i>")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--workers", type=int, default=2, help="evaluation processes on CPU (1 on CUDA)")
    p.add_argument("--jobs", type=int, default=1,
                   help="methods trained and evaluated at once, one process each (for a GPU the host leaves idle)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-start", type=int, default=100_000, help="first evaluation episode seed")
    p.add_argument("--max-episode-steps", type=int, default=0, help="episode limit (0: the task's own)")
    p.add_argument("--latency-reps", type=int, default=30)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="training precision: bf16 autocast or fp32 (auto: bf16 on CUDA, fp32 on CPU; bf16 pays "
                        "on CPUs with AVX-512 BF16 or AMX); evaluation and latency run in fp32")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="evaluate every method with an EMA of its weights (0: the raw weights; main job: 0.999)")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    p.add_argument("--plot", type=Path, default=None,
                   help="also draw success with Wilson 95%% intervals to this PNG (scripts/plot_policies.py joins "
                        "reports of several runs)")
    p.add_argument("--no-write", action="store_true", help="print only; do not append to docs/BENCHMARKS.md")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    roots = {}
    for item in a.data_root:
        task, sep, path = item.partition("=")
        if not sep or task not in a.tasks:
            p.error(f"--data-root {item!r}: write TASK=PATH with TASK one of --tasks {a.tasks}")
        roots[task] = Path(path)
    a.roots = {t: roots.get(t, Path("data") / t) for t in a.tasks}
    if not 0.0 <= a.ema_decay < 1.0:
        p.error(f"--ema-decay must be in [0, 1) (0 turns the average off), got {a.ema_decay}")
    for name in ("steps", "batch_size", "episodes", "demos", "workers", "latency_reps", "jobs", "writers"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    try:
        a.parsed_overrides = parse_overrides(a.overrides)
        demo = demo_config(a.tasks[0], Path("unused"), 1, a.image_size, 1, 1, a.demo_options)  # checked now
    except ValueError as exc:
        p.error(str(exc))
    # Demos recorded here take seeds from demo.seed on (a few more where the expert fails): they must stay
    # clear of the evaluation's seeds, or the policies are tested on scenes they were trained on.
    if demo.seed <= a.seed_start < demo.seed + 2 * a.demos:
        p.error(f"demos from seed {demo.seed} ({a.demos} of them) would run into the evaluation seeds from "
                f"{a.seed_start}; choose another seed= in --demo-options or another --seed-start")
    return a


def _row(r: MethodResult) -> list[str]:
    return [
        r.task,
        r.label,
        "yes" if r.uses_language else "no",
        f"{r.params / 1e6:.1f}",
        f"{100 * r.success_rate:.0f}% [{100 * r.ci_low:.0f}, {100 * r.ci_high:.0f}] "
        f"({r.successes}/{r.episodes})",
        f"{r.fit.samples_per_s:.1f}",
        r.latency.describe(),
    ]


def main(argv: list[str] | None = None) -> list[MethodResult]:
    a = parse_args(argv)
    command = "python scripts/bench_policies.py " + " ".join(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    settings = CompareSettings(
        steps=a.steps,
        batch_size=a.batch_size,
        episodes=a.episodes,
        seed=a.seed,
        seed_start=a.seed_start,
        preset=a.preset,
        workers=a.workers,
        latency_reps=a.latency_reps,
        max_episode_steps=a.max_episode_steps or None,
        amp=a.precision == "bf16" or (a.precision == "auto" and device.type == "cuda"),
        progress=not a.quiet,
        ema_decay=a.ema_decay,
    )
    results: list[MethodResult] = []
    # With --jobs, each method's process takes its share of the cores (or --threads each).
    process_threads = (a.threads or threads_per_worker(min(a.jobs, len(a.methods)))) if a.jobs > 1 \
        else torch.get_num_threads()
    for task in a.tasks:
        ensure_demos(task, a.roots[task], a.demos, a.image_size, workers=max(1, a.workers), writers=a.writers,
                     options=a.demo_options)
        if a.jobs > 1:
            results += compare_concurrently(task, a.roots[task], a.methods, device, settings, a.parsed_overrides,
                                            a.jobs, threads=process_threads)
        else:
            results += compare_on_task(task, a.roots[task], a.methods, device, settings, a.parsed_overrides)
    header = [
        "task",
        "method",
        "instruction input",
        "params (M)",
        "success [Wilson 95%]",
        "train samples/s",
        "batch-1 chunk latency median / p99 (ms)",
    ]
    rows = [_row(r) for r in results]
    print_grid(
        f"Policies: {a.steps} steps x batch {a.batch_size}, {a.episodes} episodes per task", header, rows
    )
    overrides = a.parsed_overrides.get("vla", {})
    n_exec = overrides.get("head.n_action_steps", HeadConfig().n_action_steps)
    data = ", ".join(f"{t}: `{a.roots[t]}`" for t in a.tasks)
    recipes = "; ".join(dict.fromkeys(f"{r.label}: {r.recipe}" for r in results))
    precision = "bf16 autocast" if settings.amp else "fp32"
    if device.type == "cpu" and any(m in ("act", "diffusion") for m in a.methods):
        swapped = "Diffusion Policy's 1-D convolutions as unfold + matmul, " if "diffusion" in a.methods else ""
        precision += (f"; {swapped}LeRobot's Adam with the fused step: same weights and function "
                      "(vla/baselines/cpu_kernels.py)")
    averaging = (f", every method evaluated with an EMA {a.ema_decay:g} of its weights (updates timed with training)"
                 if a.ema_decay else "")
    sharing = (f" Methods ran {min(a.jobs, len(a.methods))} at a time, one process each, on one {device.type}: "
               "their samples/s and latency were measured while the others ran." if a.jobs > 1 else "")
    note = (
        f"{NOTE.format(n_exec=n_exec)} Optimisers: {recipes}. Demos: {data}. {a.steps} gradient steps of "
        f"batch {a.batch_size} on {device.type} ({precision}, {process_threads} torch threads){averaging}; "
        f"evaluation: {a.episodes} seeded episodes per task (seeds from {a.seed_start}), auto gate. "
        f"Latency: batch-1 `predict_chunk` on {device.type} in fp32, result on the host, median / p99 of "
        f"{a.latency_reps} calls.{sharing} "
        f"{machine_description()}"
    )
    print(note)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(
            json.dumps({"command": command, "results": [r.to_dict() for r in results]}, indent=2)
        )
    if a.plot is not None and results:
        print(f"wrote {plot_success([r.to_dict() for r in results], a.plot, machine_description())}")
    if not a.no_write:
        append_section(
            "Policy comparison: ACT, Diffusion Policy and our VLA on the same demos",
            command,
            header,
            rows,
            note=note,
        )
    return results


if __name__ == "__main__":
    main()
