"""Speed: training throughput beside a transformers reference, batch-1 chunk latency, control-loop rate.

    python scripts/bench_speed.py [--presets tiny small] [--device auto] [--threads 2] [--batch-size 32]
        [--train-steps 20] [--latency-reps 100] [--control-steps 50] [--no-write]

* Training: samples/s of our VLA (l1 and flow heads) and of a straightforward transformers model of the
  same size (SiglipVisionModel + LlamaModel + nn.TransformerDecoder head, vla/baselines/reference_vlm.py),
  same batch, same threads, same plain AdamW, timed in interleaved rounds; median step time. On the CPU
  also the floor: each step's dense FLOPs against this CPU's GEMM ceiling (vla/baselines/floor.py).
* Latency: batch-1 ``predict_chunk`` (result copied to the host), median and p99, per head; the flow head
  with its prefix cache (backbone once per chunk) and without (backbone at every integration step). On
  CUDA also bf16, each captured whole as one CUDA graph (vla/cuda_graph.py) in fp32 and bf16, and bf16 +
  torch.compile(mode="reduce-overhead") (CUDA graphs where the compiler captures them).
* Control loop: the supervised loop on the simulated robot, realtime at 10 Hz with async inference, and
  lockstep without a clock (the highest sustained rate). Env throughput alone: scripts/bench_env.py.

Appends the tables, with this command and the machine, to docs/BENCHMARKS.md unless ``--no-write``.
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
from vla.baselines.floor import gemm_ceiling
from vla.baselines.speed import (
    Scene,
    control_loop_rate,
    inference_latency,
    make_scene,
    training_step_work,
    training_throughput,
)
from vla.benchmarks import append_section, machine_description
from vla.eval.rollout import resolve_device
from vla.reporting import print_grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny"], choices=["tiny", "small"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:<i>")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    p.add_argument(
        "--task", default="pick_place", help="env whose cameras, state and instructions feed the models"
    )
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=0, help="training batch (0: 32 on CPU, 256 on CUDA)")
    p.add_argument("--train-steps", type=int, default=20, help="timed training steps per model")
    p.add_argument("--train-warmup", type=int, default=3, help="untimed training steps per model first")
    p.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds the steps are split into")
    p.add_argument("--latency-reps", type=int, default=100)
    p.add_argument("--latency-warmup", type=int, default=10)
    p.add_argument(
        "--n-samples", type=int, default=4, help="flow samples per call of the risk score (0: skip)"
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows on CUDA")
    p.add_argument(
        "--compile-train",
        action="store_true",
        help="add training rows with regional torch.compile (ours and the reference; compiles for minutes on a CPU)",
    )
    p.add_argument("--control-steps", type=int, default=50, help="ticks per control-loop run (0: skip)")
    p.add_argument("--control-hz", type=float, default=10.0)
    p.add_argument("--skip", nargs="*", default=[], choices=["train", "latency", "control"])
    p.add_argument("--no-write", action="store_true", help="print only; do not append to docs/BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=None, help="also write every table to this JSON file")
    a = p.parse_args(argv)
    if a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    return a


Section = tuple[str, list[str], list[list[str]], str]  # title, header, rows, note


def _floor_section(
    scene: Scene, presets: list[str], batch_size: int, measured_ms: dict[str, float], threads: int, machine: str
) -> Section:
    """The training step's dense arithmetic against this CPU's GEMM ceiling (vla/baselines/floor.py)."""
    fp32, bf16 = gemm_ceiling(torch.float32), gemm_ceiling(torch.bfloat16)
    header = ["model", "GFLOP / step", "floor at the fp32 ceiling (ms)", "in GEMM kernels (ms)", "measured step (ms)"]
    rows, needed = [], []
    for preset in presets:
        for name, work in training_step_work(scene, preset, batch_size).items():
            rows.append([name, f"{work.gflop:.2f}", f"{work.floor_ms(fp32):.1f}", f"{1e3 * work.gemm_seconds:.1f}",
                         f"{measured_ms[name]:.1f}"])
            if name.startswith("transformers reference"):
                needed.append(f"{preset}: {measured_ms[name] / 2:.1f} ms")
    note = (
        f"FLOPs of one training step (forward and backward, batch {batch_size}, fp32) in matrix multiplies, attention "
        "products and convolutions, counted by torch.utils.flop_counter with attention on the math backend; the "
        f"time the step, run as usual, spends in GEMM kernels (torch.profiler, 3 steps). GEMM ceiling of this CPU "
        f"with {threads} thread(s), a 2048^3 product: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s. The floor "
        "is the step's FLOPs at the fp32 ceiling: no fp32 implementation of this model size steps faster. Twice "
        f"the reference's measured speed needs a step of at most {'; '.join(needed)}. {machine}"
    )
    print_grid(f"Training step floor (fp32 GEMM ceiling {fp32:.0f} GFLOP/s, bf16 {bf16:.0f})", header, rows)
    return ("Training step floor: dense FLOPs against the GEMM ceiling", header, rows, note)


def main(argv: list[str] | None = None) -> list[Section]:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(resolve_device(a.device))
    cuda = device.type == "cuda"
    batch_size = a.batch_size or (256 if cuda else 32)
    scene = make_scene(EnvConfig(task=a.task, image_size=a.image_size), n_frames=min(batch_size, 16))
    where = f"{device.type}, {a.threads} torch thread(s)" + (", bf16 autocast" if cuda else ", fp32")
    machine = machine_description()
    command = "python scripts/bench_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sections: list[Section] = []

    if "train" not in a.skip:
        header = ["model", "params (M)", "step median / p99 (ms)", "samples/s", "vs reference"]
        rows = []
        measured_ms: dict[str, float] = {}
        for preset in a.presets:
            measured = training_throughput(
                scene, preset, batch_size, a.train_steps, a.train_warmup, a.rounds, device, bf16=cuda,
                compiled=a.compile_train,
            )
            measured_ms.update({r.model: r.step.median_ms for r in measured})
            ref = next(r for r in measured if r.model == f"transformers reference {preset} (l1 head)")
            rows += [
                [
                    r.model,
                    f"{r.params / 1e6:.2f}",
                    r.step.describe(),
                    f"{r.samples_per_s:.1f}",
                    f"{r.samples_per_s / ref.samples_per_s:.2f}x",
                ]
                for r in measured
            ]
        note = (
            f"Training step (forward, backward, AdamW) on one fixed batch of {batch_size} ({where}); "
            f"{a.train_steps} timed steps per model after {a.train_warmup} warm-up steps, in {a.rounds} "
            "interleaved rounds. Ours includes its image augmentation. Reference: SiglipVisionModel + "
            "LlamaModel (transformers, random init) + nn.TransformerDecoder L1 head with the same widths, "
            f"depths, heads, token counts and sequence layout. {machine}"
        )
        sections.append(("Training throughput against a transformers reference", header, rows, note))
        print_grid(f"Training throughput, batch {batch_size} ({where})", header, rows)
        if device.type == "cpu":  # CPU kernel times and the CPU's GEMM ceiling; a GPU needs device timers
            sections.append(_floor_section(scene, a.presets, batch_size, measured_ms, a.threads, machine))

    if "latency" not in a.skip:
        header = ["model", "variant", "median / p99 (ms)"]
        rows = []
        for preset in a.presets:
            for r in inference_latency(
                scene,
                preset,
                device,
                a.latency_reps,
                a.latency_warmup,
                a.n_samples,
                compile_cuda=not a.no_compile,
            ):
                rows.append([r.model, r.variant, r.timing.describe() if r.timing else f"failed: {r.error}"])
        note = (
            f"Batch-1 `predict_chunk` on a rendered {a.task} observation, result copied to the host; "
            f"{a.latency_reps} timed calls after {a.latency_warmup} warm-up calls, {a.threads} torch "
            f"thread(s). {machine}"
        )
        sections.append(("Chunk inference latency (batch 1)", header, rows, note))
        print_grid(f"Chunk inference latency, batch 1 ({device.type}, {a.threads} thread(s))", header, rows)

    if "control" not in a.skip and a.control_steps > 0:
        header = [
            "loop",
            "ticks",
            "achieved rate (Hz)",
            "deadline misses",
            "tick work p99 (ms)",
            "inference median (ms)",
        ]
        rows = [
            [
                r.mode,
                r.steps,
                f"{r.achieved_hz:.2f}",
                r.deadline_misses,
                f"{r.tick_p99_ms:.1f}",
                f"{r.latency_median_ms:.1f}",
            ]
            for r in control_loop_rate(scene, a.presets[0], device, a.control_steps, a.threads, a.control_hz)
        ]
        note = (
            f"scripts/control.py's loop (vla/supervision) on the simulated {a.task} robot, auto gate, "
            f"a random-init {a.presets[0]} l1 policy on {device.type}, one episode of up to "
            f"{a.control_steps} ticks per row. {machine}"
        )
        sections.append(("Sustained control-loop rate", header, rows, note))
        print_grid("Control loop", header, rows)

    if not a.no_write:
        for title, header, rows, note in sections:
            append_section(title, command, header, rows, note=note)
    if a.json is not None:
        tables = [{"title": t, "header": h, "rows": [[str(c) for c in r] for r in rows], "note": n}
                  for t, h, rows, n in sections]
        a.json.write_text(json.dumps({"command": command, "sections": tables}, indent=2))
    return sections


if __name__ == "__main__":
    main()
