"""How an episode ended, beyond success or failure: where in the task a failed episode went wrong.

A success rate says how often; the outcome says what to fix. The tracker watches the scene after
every step: which cubes the gripper held, and where the named cube was when the hand last let go.
At the end it names one outcome:

* ``success``;
* ``never_grasped``: no cube was ever held;
* ``wrong_object``: another cube was held, never the named one;
* ``not_lifted`` (tasks that only lift): the named cube held but not high enough at the end;
* ``not_released``: the named cube still in the hand at the end of a place task;
* ``released_near_target``: let go within the target's reach (pad radius, or a cube's width on a
  stack) but not a success: on the rim, tipped over, still moving, or the hand still touching it;
* ``released_off_target``: let go (or dropped) farther away.

"Held" is the environment's own grasp test (every finger touches the cube), the test its tasks use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from envs.tabletop import TabletopEnv

OUTCOMES = (
    "success",
    "never_grasped",
    "wrong_object",
    "not_lifted",
    "not_released",
    "released_near_target",
    "released_off_target",
)


class OutcomeTracker:
    """Call ``update(env)`` after the reset and after every step, then ``outcome(env, success)``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.held_named = False
        self.held_other = False
        self._holding = False
        self.release_xy: np.ndarray | None = None  # named cube's xy when the hand last let go of it

    def update(self, env: TabletopEnv) -> None:
        episode = env.episode
        if episode is None:
            raise ValueError("OutcomeTracker.update needs an env that has been reset")
        named = episode.object_index
        holding = env.is_grasped(named)
        if holding:
            self.held_named = True
        elif self._holding:
            self.release_xy = env.cube_pos(named)[:2].copy()
        self._holding = holding
        if not self.held_other:
            self.held_other = any(env.is_grasped(i) for i in range(env.task.n_cubes) if i != named)

    def outcome(self, env: TabletopEnv, success: bool) -> str:
        if success:
            return "success"
        if not self.held_named:
            return "wrong_object" if self.held_other else "never_grasped"
        episode = env.episode
        assert episode is not None
        place = env.task.expert_goal(env, episode).place
        if place is None:
            return "not_lifted"
        if self._holding or self.release_xy is None:
            return "not_released"
        reach = env.pad_radius() if env.task.target_kind == "pad" else 2 * env.cube_half
        near = np.linalg.norm(self.release_xy - place[:2]) <= reach
        return "released_near_target" if near else "released_off_target"


def outcome_counts(outcomes: Iterable[str]) -> dict[str, int]:
    """Counts in ``OUTCOMES`` order, zero counts left out."""
    seen = Counter(outcomes)
    unknown = set(seen) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"unknown episode outcome(s) {sorted(unknown)}; expected one of {OUTCOMES}")
    return {o: seen[o] for o in OUTCOMES if seen[o]}
