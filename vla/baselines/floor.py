"""How fast a training step could be on this machine: its matrix-multiply work against the GEMM ceiling.

Two models of the same widths, depths and token counts do the same matrix multiplies, whoever wrote
them. The profiler counts those FLOPs (forward and backward: autograd's backward of a linear layer is
matrix multiplies too); a large square GEMM measures the most this machine's BLAS does per second.
Their ratio is a floor on the step time that no implementation of that model size beats in that
precision, and it says how much of a speed-up over a reference implementation is possible at all.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

# The aten kernels the profiler attributes matrix-multiply FLOPs to.
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


@dataclass(frozen=True)
class MatmulWork:
    """Matrix-multiply work of one call of a step function, from the profiler (CPU only)."""

    gflop: float  # per step
    seconds: float  # self time of those kernels per step

    @property
    def gflop_per_s(self) -> float:
        return self.gflop / self.seconds if self.seconds > 0 else float("nan")

    def floor_ms(self, ceiling_gflop_per_s: float) -> float:
        """The step's matrix multiplies alone, run at ``ceiling_gflop_per_s``."""
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


def matmul_work(step: Callable[[], object], steps: int = 3) -> MatmulWork:
    """Profile ``steps`` calls of ``step`` (already warmed up) on the CPU; matrix-multiply FLOPs and time per call."""
    if steps < 1:
        raise ValueError(f"need steps >= 1, got {steps}")
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.key in MATMUL_OPS]
    flops = sum(e.flops for e in events)
    if flops == 0:
        raise RuntimeError("the profiler counted no matrix-multiply FLOPs; is the step running on the CPU?")
    seconds = sum(e.self_cpu_time_total for e in events) / 1e6  # profiler times are microseconds
    return MatmulWork(gflop=flops / steps / 1e9, seconds=seconds / steps)
