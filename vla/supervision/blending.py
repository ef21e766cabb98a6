"""Blending overlapping action chunks, and the tick-indexed action queue that applies it.

With asynchronous inference a new chunk arrives while the previous one is still being executed, so
for some future ticks there are two (or more) planned actions. Switching abruptly from one plan to
the next makes the arm jerk wherever consecutive chunks disagree; blending over the overlap hides
that. Two schemes:

* ``crossfade``: at arrival, the old plan's remaining actions fade linearly into the new chunk
  over the overlap (weight of the new chunk rises (k+1)/(n+1) over n overlapping ticks); after
  the overlap only the new chunk is left. Reacts fast, since the newest plan wins quickly.
* ``ensemble``: ACT's temporal ensembling; every chunk that covers a tick votes with weight
  exp(-m * i), i = 0 for the oldest prediction; m > 0 favours older predictions (smoother),
  m < 0 newer ones (more reactive).
* ``none``: the newest chunk replaces the plan outright (a baseline to compare against).

Gripper dims are never averaged: a half-closed gripper neither grasps nor releases, so they take
the newest prediction.

A chunk predicted from the observation of tick ``t`` plans ticks ``t, t+1, ...``; if it arrives at
tick ``now > t`` its first ``now - t`` actions are already in the past and are dropped, which keeps
slow inference aligned with time instead of replaying stale motion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLEND_MODES = ("crossfade", "ensemble", "none")


def crossfade_weights(n: int) -> np.ndarray:
    """(n,) weights of the new chunk over an overlap of n ticks: 1/(n+1), 2/(n+1), ..., n/(n+1)."""
    if n < 0:
        raise ValueError(f"overlap length must be >= 0, got {n}")
    return np.arange(1, n + 1, dtype=np.float64) / (n + 1)


def crossfade(old: np.ndarray, new: np.ndarray, gripper_dims: Sequence[int] = ()) -> np.ndarray:
    """Blend the old plan's remaining actions (n, A), aligned with ``new[:n]``, into ``new`` (H, A).

    Returns (H, A): the first min(n, H) ticks fade from old to new, the rest is ``new``. Old actions
    past the end of ``new`` are dropped: the newer plan decides what happens after it.
    """
    old, new = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if old.ndim != 2 or new.ndim != 2 or (old.size and old.shape[1] != new.shape[1]):
        raise ValueError(f"crossfade needs (n, A) and (H, A) arrays with the same A, got {old.shape} and {new.shape}")
    out = new.copy()
    n = min(len(old), len(new))
    if n == 0:
        return out
    w = crossfade_weights(n)[:, None]
    out[:n] = (1.0 - w) * old[:n] + w * new[:n]
    if gripper_dims:
        out[:n, list(gripper_dims)] = new[:n, list(gripper_dims)]
    return out


def ensemble_weights(k: int, m: float) -> np.ndarray:
    """(k,) normalised weights exp(-m * i) for k predictions of one tick, oldest first (ACT's scheme)."""
    if k < 1:
        raise ValueError(f"need at least one prediction to ensemble, got {k}")
    w = np.exp(-m * np.arange(k, dtype=np.float64))
    return w / w.sum()


def temporal_ensemble(predictions: np.ndarray, m: float, gripper_dims: Sequence[int] = ()) -> np.ndarray:
    """Weighted mean of k predictions (k, A) for one tick, oldest first; gripper dims from the newest."""
    p = np.asarray(predictions, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"predictions must be (k, A), got shape {p.shape}")
    out = ensemble_weights(len(p), m) @ p
    if gripper_dims:
        out[list(gripper_dims)] = p[-1, list(gripper_dims)]
    return out


class ActionQueue:
    """Planned actions indexed by control tick, blended as chunks arrive (see the module docstring)."""

    def __init__(self, mode: str = "crossfade", ensemble_m: float = 0.1, gripper_dims: Sequence[int] = ()) -> None:
        if mode not in BLEND_MODES:
            raise ValueError(f"control.blend={mode!r} is unknown; choose from {list(BLEND_MODES)}")
        self.mode, self.m, self.gripper_dims = mode, float(ensemble_m), tuple(gripper_dims)
        # tick -> predictions for that tick, oldest first (one entry except in ensemble mode)
        self._plan: dict[int, list[np.ndarray]] = {}

    def clear(self) -> None:
        self._plan.clear()

    def remaining(self, now: int) -> int:
        """Planned ticks from ``now`` on (the plan is contiguous, so this is how long it lasts)."""
        return sum(1 for t in self._plan if t >= now)

    def push(self, chunk: np.ndarray, start_tick: int, now: int) -> int:
        """Merge a chunk that plans ticks ``start_tick...``; returns how many of its actions are still ahead."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2:
            raise ValueError(f"chunk must be (H, A), got shape {chunk.shape}")
        for t in [t for t in self._plan if t < now]:
            del self._plan[t]
        skip = max(0, now - start_tick)
        ahead = chunk[skip:]
        if len(ahead) == 0:
            return 0
        ticks = range(now if skip else start_tick, (now if skip else start_tick) + len(ahead))
        if self.mode == "ensemble":
            for t, a in zip(ticks, ahead, strict=True):
                self._plan.setdefault(t, []).append(a)
            return len(ahead)
        old = [self._plan[t][-1] for t in ticks if t in self._plan]
        if self.mode == "crossfade" and old and ticks[0] in self._plan:
            ahead = crossfade(np.stack(old), ahead, self.gripper_dims)
        kept = {t: v for t, v in self._plan.items() if t < ticks[0]}
        self._plan = kept | {t: [a] for t, a in zip(ticks, ahead, strict=True)}
        return len(ahead)

    def peek(self, now: int) -> np.ndarray:
        """(k, A) blended plan from tick ``now`` on, without consuming it ((0, 0) when nothing is planned)."""
        ticks = sorted(t for t in self._plan if t >= now)
        if not ticks or ticks[0] != now:
            return np.zeros((0, 0))
        return np.stack([self._blend(self._plan[t]) for t in ticks])

    def _blend(self, preds: list[np.ndarray]) -> np.ndarray:
        if len(preds) == 1:
            return preds[0].copy()
        return temporal_ensemble(np.stack(preds), self.m, self.gripper_dims)

    def pop(self, now: int) -> np.ndarray | None:
        """The action for tick ``now`` (blended), or None when nothing is planned for it."""
        for t in [t for t in self._plan if t < now]:
            del self._plan[t]
        preds = self._plan.pop(now, None)
        return None if preds is None else self._blend(preds)
