"""Chunk inference in a background thread, so slow inference never stalls the control tick.

The control loop submits an observation and keeps executing its queued actions; it polls for the
finished chunk on later ticks. At most one request is in flight: a policy is a single model on
one device, and queueing more requests would only make every answer older.

A request that runs past ``timeout_s`` is reported once as timed out and abandoned; Python threads
cannot be killed, so the worker stays busy until the call returns, and its late answer is dropped
(its latency is still recorded: it is what the policy really took). ``latencies`` holds every
completed call's wall time, for the median / p99 the loop reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ChunkPredictor = Callable[[Mapping[str, Any]], np.ndarray]


@dataclass
class InferenceResult:
    request_id: int
    tick: int  # control tick of the observation the chunk was predicted from
    chunk: np.ndarray | None  # (H, A) as returned by the predictor (unchecked), None on error/timeout
    error: BaseException | None = None
    latency_s: float = 0.0
    timed_out: bool = False


class AsyncInference:
    """One background worker running ``predict(observation) -> chunk`` on request."""

    def __init__(self, predict: ChunkPredictor, timeout_s: float = 1.0, name: str = "inference") -> None:
        if timeout_s <= 0:
            raise ValueError(f"control.inference_timeout_s must be positive, got {timeout_s}")
        self._predict, self.timeout_s = predict, float(timeout_s)
        self._cv = threading.Condition()
        self._request: tuple[int, int, Mapping[str, Any]] | None = None
        self._running: tuple[int, int, float] | None = None  # (id, tick, start time) of the call in progress
        self._result: InferenceResult | None = None
        self._abandoned: set[int] = set()
        self._next_id = 0
        self._closed = False
        self.latencies: list[float] = []
        self.timeouts = 0
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A request is queued or running (including an abandoned, timed-out one)."""
        with self._cv:
            return self._request is not None or self._running is not None

    @property
    def stalled(self) -> bool:
        """The call in progress already timed out: waiting for it would only block the caller."""
        with self._cv:
            return self._running is not None and self._running[0] in self._abandoned

    def submit(self, observation: Mapping[str, Any], tick: int) -> bool:
        """Ask for a chunk from ``observation`` (taken at ``tick``); False when a request is already in flight."""
        with self._cv:
            if self._closed:
                raise RuntimeError("AsyncInference is closed")
            if self._request is not None or self._running is not None or self._result is not None:
                return False
            self._request = (self._next_id, tick, observation)
            self._next_id += 1
            self._cv.notify_all()
            return True

    def poll(self) -> InferenceResult | None:
        """The finished result if there is one, a timed-out marker once per overdue request, else None."""
        with self._cv:
            return self._take_locked()

    def wait(self, timeout_s: float | None = None) -> InferenceResult | None:
        """Block until a result (or the request's timeout) arrives, at most ``timeout_s`` (default: the timeout)."""
        deadline = time.perf_counter() + (self.timeout_s if timeout_s is None else timeout_s)
        with self._cv:
            while True:
                got = self._take_locked()
                if got is not None or (self._request is None and self._running is None):
                    return got
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                # Wake up at the request's own timeout too, so wait() reports it without overshooting.
                if self._running is not None:
                    left = min(left, max(1e-4, self._running[2] + self.timeout_s - time.perf_counter()))
                self._cv.wait(left)

    def _take_locked(self) -> InferenceResult | None:
        if self._result is not None:
            result, self._result = self._result, None
            return result
        if self._running is not None:
            rid, tick, start = self._running
            elapsed = time.perf_counter() - start
            if rid not in self._abandoned and elapsed > self.timeout_s:
                self._abandoned.add(rid)
                self.timeouts += 1
                return InferenceResult(rid, tick, None, TimeoutError(
                    f"inference took longer than {self.timeout_s:.3f} s"), elapsed, timed_out=True)
        return None

    def _work(self) -> None:
        while True:
            with self._cv:
                while self._request is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                rid, tick, obs = self._request
                self._request = None
                start = time.perf_counter()
                self._running = (rid, tick, start)
                # A waiter that went to sleep before this request started must re-arm on its timeout.
                self._cv.notify_all()
            chunk, error = None, None
            try:
                chunk = self._predict(obs)
            except Exception as exc:  # a failing policy is reported to the loop, never kills the worker
                error = exc
            latency = time.perf_counter() - start
            with self._cv:
                self._running = None
                self.latencies.append(latency)
                if rid in self._abandoned:
                    self._abandoned.discard(rid)
                else:
                    self._result = InferenceResult(rid, tick, chunk, error, latency)
                self._cv.notify_all()

    def close(self, join_timeout_s: float = 1.0) -> None:
        """Stop the worker; a call still running is left to finish on its own (daemon thread)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(join_timeout_s)

    def __enter__(self) -> AsyncInference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """Median, p99 and max of inference latencies in milliseconds (NaN when there are none)."""
    if not latencies:
        return {"median_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan"), "count": 0}
    a = np.asarray(latencies) * 1e3
    return {"median_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
            "count": len(a)}


def policy_predictor(policy: Any, n_samples: int = 1, device: Any = None) -> ChunkPredictor:
    """Wrap a VLAPolicy as ``observation -> (H, A)`` numpy chunk, or (n_samples, H, A) when n_samples > 1."""
    import torch

    from vla.eval.rollout import obs_to_batch

    def predict(observation: Mapping[str, Any]) -> np.ndarray:
        dev = device if device is not None else getattr(policy, "device", "cpu")
        batch = obs_to_batch(observation, dev)
        with torch.inference_mode():
            out = policy.predict_chunk(batch, n_samples=n_samples) if n_samples > 1 else policy.predict_chunk(batch)
        return torch.as_tensor(out)[0].float().cpu().numpy()

    return predict
