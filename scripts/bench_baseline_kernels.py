"""CPU training step of LeRobot's Diffusion Policy (or ACT): stock against vla/baselines/cpu_kernels.py.

    python scripts/bench_baseline_kernels.py [--kind diffusion] [--task pick_place] [--image-size 64]
        [--batch-size 64] [--steps 6] [--rounds 2] [--set FIELD=VALUE ...] [--no-write] [--json PATH]

Times LeRobot's own optimiser preset and clipping on one batch of real rendered frames, four ways: stock
and with the 1-D convolutions as unfold + matmul plus the fused Adam step, each in fp32 and under bf16
autocast (which pays on CPUs with AVX-512 BF16 or AMX). Appends the table, with this command and the
machine, to docs/BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from envs.config import EnvConfig
from vla.baselines.kernel_speed import KernelRow, lerobot_step_times
from vla.baselines.methods import parse_overrides
from vla.baselines.speed import make_scene
from vla.benchmarks import append_section, machine_description
from vla.reporting import print_grid

LABELS = {"stock": "stock", "cpu_kernels": "unfold + matmul convolutions, fused Adam"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="diffusion", choices=["diffusion", "act"])
    p.add_argument("--task", default="pick_place", help="env whose cameras and state feed the policy")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds the timed steps are split into")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    p.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="FIELD=VALUE",
                   help="fields of the LeRobot config, e.g. down_dims=[256,512,1024]")
    p.add_argument("--no-write", action="store_true", help="print only; do not append to docs/BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    for name in ("image_size", "batch_size", "steps", "rounds", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.steps < a.rounds:
        p.error(f"--steps ({a.steps}) must be at least --rounds ({a.rounds})")
    try:
        a.fields = parse_overrides([f"{a.kind}.{item}" for item in a.overrides]).get(a.kind, {})
    except ValueError as exc:
        p.error(str(exc))
    return a


def main(argv: list[str] | None = None) -> list[KernelRow]:
    a = parse_args(argv)
    command = "python scripts/bench_baseline_kernels.py " + " ".join(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(a.threads)
    scene = make_scene(EnvConfig(task=a.task, image_size=a.image_size), n_frames=8)
    rows = lerobot_step_times(scene, a.kind, a.batch_size, a.steps, a.warmup, a.rounds, a.fields)
    stock = {r.precision: r for r in rows if r.kernels == "stock"}
    header = ["kernels", "precision", "step median / p99 (ms)", "samples/s", "vs stock fp32"]
    table = [
        [LABELS[r.kernels], r.precision, r.step.describe(), f"{r.samples_per_s:.1f}",
         f"{r.samples_per_s / stock['fp32'].samples_per_s:.2f}x"]
        for r in rows
    ]
    title = f"LeRobot {a.kind}: CPU training step, batch {a.batch_size}, {a.image_size} px"
    print_grid(title, header, table)
    note = (
        f"LeRobot's {a.kind} policy on {a.task} ({a.image_size} px cameras, "
        f"{rows[0].params / 1e6:.1f} M parameters), its optimiser preset and clipping, one fixed batch of "
        f"{a.batch_size}; {a.steps} timed steps per variant after {a.warmup} untimed, in {a.rounds} interleaved "
        f"rounds, {a.threads} torch threads. {machine_description()}"
    )
    print(note)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"command": command, "rows": [
            {"kernels": r.kernels, "precision": r.precision, "median_ms": r.step.median_ms, "p99_ms": r.step.p99_ms,
             "samples_per_s": r.samples_per_s} for r in rows]}, indent=2))
    if not a.no_write:
        append_section(f"LeRobot {a.kind} on the CPU: stock against vla/baselines/cpu_kernels.py", command, header,
                       table, note=note)
    return rows


if __name__ == "__main__":
    main()
