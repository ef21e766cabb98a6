"""Timing helpers shared by the benchmark scripts: warm-up, then per-call wall times with device sync.

CUDA work is asynchronous, so every timed call ends with a synchronisation; otherwise the clock
would stop when the kernels are queued, not when they finish. Figures are medians (robust to the
odd scheduler hiccup on a shared machine) with the 99th percentile beside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
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


def interleaved_timings[Key: Hashable](
    calls: Mapping[Key, Callable[[], object]],
    reps: int,
    warmup: int,
    rounds: int,
    device: torch.device | str = "cpu",
    rewarm: int = 1,
) -> dict[Key, Timing]:
    """Time every call ``reps`` times, split into ``rounds`` that each run all of them in turn.

    Interleaving spreads drifting background load over all the calls alike instead of charging it to
    whichever ran last. ``warmup`` untimed calls precede each one's first round; ``rewarm`` untimed calls
    precede its later rounds, after the others have evicted its caches."""
    if rounds < 1 or reps < rounds:
        raise ValueError(f"need rounds >= 1 and steps >= rounds, got steps={reps}, rounds={rounds}")
    seconds: dict[Key, list[float]] = {key: [] for key in calls}
    for r in range(rounds):
        for key, call in calls.items():
            seconds[key] += time_calls(call, reps // rounds, warmup if r == 0 else rewarm, device).seconds
    return {key: Timing(s) for key, s in seconds.items()}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
