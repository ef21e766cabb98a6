"""Risk scores computed from the policy itself, in radians (higher = the policy is less sure).

Two estimators, both comparing action chunks that should agree:

* ``samples`` (stochastic heads, e.g. flow matching): draw ``n_samples`` chunks for the same
  observation; the score is their spread (standard deviation across samples).
* ``consistency`` (any head): the new chunk and the previous one predict the same future ticks where
  they overlap; the score is how far apart those predictions are.

Both reduce a (steps, dims) disagreement the same way: per step the largest arm-joint disagreement,
averaged over steps, plus ``gripper_weight`` times the mean gripper disagreement. A score is ``nan``
when there is nothing to compare (first chunk of an episode, no overlap left); ``nan`` never
escalates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vla.supervision.config import RiskConfig


def _reduce(disagreement: np.ndarray, n_arm: int, gripper_weight: float) -> float:
    """(steps, A) non-negative disagreement -> scalar score."""
    if disagreement.size == 0:
        return float("nan")
    arm = disagreement[:, :n_arm].max(axis=1).mean()
    grip = disagreement[:, n_arm:].mean() if disagreement.shape[1] > n_arm else 0.0
    return float(arm + gripper_weight * grip)


def sample_disagreement(samples: np.ndarray, n_arm: int, gripper_weight: float = 0.5) -> float:
    """Spread of ``samples`` (k, H, A) drawn for one observation."""
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 3 or samples.shape[0] < 2:
        raise ValueError(f"samples must be (k >= 2, H, A), got shape {samples.shape}")
    return _reduce(samples.std(axis=0), n_arm, gripper_weight)


def chunk_inconsistency(
    previous: np.ndarray, current: np.ndarray, offset: int, n_arm: int, gripper_weight: float = 0.5
) -> float:
    """Disagreement where ``current`` (H, A), predicted ``offset`` ticks after ``previous``, overlaps it."""
    previous, current = np.asarray(previous, dtype=float), np.asarray(current, dtype=float)
    if offset < 0:
        raise ValueError(f"offset must be >= 0 ticks, got {offset}")
    overlap = min(previous.shape[0] - offset, current.shape[0])
    if overlap <= 0:
        return float("nan")
    return _reduce(np.abs(previous[offset : offset + overlap] - current[:overlap]), n_arm, gripper_weight)


def resolve_risk_kind(kind: str, policy: Any) -> str:
    """``auto`` -> ``samples`` for policies that sample distinct chunks (``policy.stochastic``), else
    ``consistency``."""
    if kind != "auto":
        return kind
    return "samples" if bool(getattr(policy, "stochastic", False)) else "consistency"


@dataclass(frozen=True)
class RiskScore:
    value: float  # nan: not available
    kind: str
    threshold: float

    @property
    def high(self) -> bool:
        return bool(np.isfinite(self.value) and self.value >= self.threshold)

    def describe(self) -> str:
        if not np.isfinite(self.value):
            return f"risk n/a ({self.kind})"
        rel = ">=" if self.high else "<"
        return f"risk {self.value:.3f} {rel} {self.threshold:.3f} ({self.kind})"


class RiskEstimator:
    """Scores each proposed chunk; remembers the previous chunk for the consistency estimator."""

    def __init__(self, cfg: RiskConfig, kind: str, n_arm: int) -> None:
        if kind not in ("samples", "consistency", "none"):
            raise ValueError(f"risk kind must be resolved to samples, consistency or none, got {kind!r}")
        self.cfg, self.kind, self.n_arm = cfg, kind, n_arm
        self.threshold = cfg.threshold(kind)
        self.forget()

    @property
    def n_samples(self) -> int:
        """How many chunks to request from the policy per proposal."""
        return self.cfg.n_samples if self.kind == "samples" else 1

    def forget(self) -> None:
        """Drop the previous chunk (new episode, or someone else drove in between)."""
        self._previous: np.ndarray | None = None
        self._previous_step = 0

    def score(self, chunk: np.ndarray, step: int, samples: np.ndarray | None = None) -> RiskScore:
        value = float("nan")
        if self.kind == "samples" and samples is not None and samples.shape[0] >= 2:
            value = sample_disagreement(samples, self.n_arm, self.cfg.gripper_weight)
        elif self.kind == "consistency" and self._previous is not None:
            value = chunk_inconsistency(self._previous, chunk, step - self._previous_step, self.n_arm,
                                        self.cfg.gripper_weight)
        if self.kind == "consistency":
            self._previous, self._previous_step = np.array(chunk, dtype=float), step
        return RiskScore(value, self.kind, self.threshold)
