"""How fast a training step could be on this machine: its dense arithmetic against the GEMM ceiling.

Two models of the same widths, depths and token counts do the same matrix multiplies and attention
products, whoever wrote them. ``FlopCounterMode`` counts those FLOPs over one step, forward and backward,
with attention run by the math backend so that its two products are counted too (the fused CPU kernel
reports none), and convolutions included. A large square GEMM measures the most this machine's BLAS
does per second. Their ratio is a floor on the step time that no implementation of that model size
beats in that precision, and it says how much of a speed-up over a reference implementation is
possible at all. The profiler adds how long the step, run as usual, spends in GEMM kernels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

# The aten kernels the profiler attributes matrix multiplies to (linear layers, batched products).
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


@dataclass(frozen=True)
class StepWork:
    """Dense arithmetic of one call of a training-step function on the CPU."""

    gflop: float  # matrix multiplies, attention products and convolutions, forward and backward
    gemm_seconds: float  # time the step, run as usual, spends in GEMM kernels

    def floor_ms(self, ceiling_gflop_per_s: float) -> float:
        """The step's dense arithmetic alone, run at ``ceiling_gflop_per_s``."""
        return 1e3 * self.gflop / ceiling_gflop_per_s


def gemm_ceiling(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an ``n`` x ``n`` x ``n`` matrix product on the CPU with torch's current thread count."""
    if n < 1 or reps < 1:
        raise ValueError(f"need n >= 1 and reps >= 1, got {n} and {reps}")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    for _ in range(2):
        a @ b
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(seconds) / 1e9


def count_gflop(step: Callable[[], object]) -> float:
    """Dense FLOPs of one call of ``step``, in GFLOP (attention through the math backend, so it counts)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    if flops == 0:
        raise RuntimeError("no matrix-multiply, attention or convolution FLOPs were counted; does the step compute?")
    return flops / 1e9


def gemm_seconds(step: Callable[[], object], steps: int = 3) -> float:
    """Seconds per call of ``step`` spent in GEMM kernels, from the profiler over ``steps`` calls."""
    if steps < 1:
        raise ValueError(f"need steps >= 1, got {steps}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    micros = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in GEMM_OPS)
    return micros / 1e6 / steps


def step_work(step: Callable[[], object], steps: int = 3) -> StepWork:
    """FLOPs of one call and GEMM time per call of ``step`` (warm it up first)."""
    return StepWork(gflop=count_gflop(step), gemm_seconds=gemm_seconds(step, steps))
