"""Timing helpers shared by the benchmark scripts: warm-up, then per-call wall times with device sync.

CUDA work is asynchronous, so every timed call ends with a synchronisation; otherwise the clock
would stop when the kernels are queued, not when they finish. Figures are medians (robust to the
odd scheduler hiccup on a shared machine) with the 99th percentile beside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    seconds: list[float]  # one per timed call

    @property
    def median_ms(self) -> float:
        return float(np.median(self.seconds) * 1e3)

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.seconds, 99) * 1e3)

    def describe(self) -> str:
        return f"{self.median_ms:.2f} / {self.p99_ms:.2f}"


def time_calls(
    fn: Callable[[], object], reps: int, warmup: int, device: torch.device | str = "cpu"
) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``reps`` times, each timed to its end on ``device``."""
    if reps < 1 or warmup < 0:
        raise ValueError(f"need reps >= 1 and warmup >= 0, got {reps} and {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return Timing(seconds)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
