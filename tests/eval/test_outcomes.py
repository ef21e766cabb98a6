"""Episode outcomes: hand-made grasp histories, and real MuJoCo episodes driven by the scripted expert."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from envs.expert import ScriptedExpert
from envs.tabletop import TabletopEnv
from envs.tasks.base import ExpertGoal
from vla.eval.outcomes import OUTCOMES, OutcomeTracker, outcome_counts


class FakeScene:
    """Two cubes; the test sets which one the gripper holds and where the named cube is, tick by tick."""

    cube_half = 0.02

    def __init__(self, place: tuple[float, float] | None) -> None:
        self.place = None if place is None else np.array([*place, 0.02])
        self.episode = SimpleNamespace(object_index=0)
        self.task = SimpleNamespace(n_cubes=2, target_kind="pad" if place is not None else None,
                                    expert_goal=lambda env, ep: ExpertGoal(cube=0, place=self.place))
        self.held: int | None = None
        self.xy = np.zeros(2)

    def is_grasped(self, i: int) -> bool:
        return self.held == i

    def cube_pos(self, i: int) -> np.ndarray:
        return np.array([*self.xy, 0.02])

    def pad_radius(self) -> float:
        return 0.05


def _play(scene: FakeScene, ticks: list[tuple[int | None, tuple[float, float]]], success: bool = False) -> str:
    tracker = OutcomeTracker()
    for held, xy in ticks:
        scene.held, scene.xy = held, np.array(xy)
        tracker.update(scene)
    return tracker.outcome(scene, success)


@pytest.mark.parametrize(
    ("place", "ticks", "expected"),
    [
        ((0.3, 0.0), [(None, (0.0, 0.0))] * 3, "never_grasped"),
        ((0.3, 0.0), [(None, (0.0, 0.0)), (1, (0.0, 0.0)), (None, (0.0, 0.0))], "wrong_object"),
        ((0.3, 0.0), [(None, (0.0, 0.0)), (0, (0.0, 0.0)), (0, (0.2, 0.0))], "not_released"),
        # Let go 4 cm from the pad centre (radius 5 cm): near; dropped 20 cm short of it: off target.
        ((0.3, 0.0), [(0, (0.0, 0.0)), (0, (0.26, 0.0)), (None, (0.26, 0.0)), (None, (0.4, 0.0))],
         "released_near_target"),
        ((0.3, 0.0), [(0, (0.0, 0.0)), (None, (0.1, 0.0)), (None, (0.3, 0.0))], "released_off_target"),
        # Dropped on the way, picked up again, still held at the end: not released.
        ((0.3, 0.0), [(0, (0.0, 0.0)), (None, (0.1, 0.0)), (0, (0.1, 0.0)), (0, (0.3, 0.0))], "not_released"),
        (None, [(None, (0.0, 0.0)), (0, (0.0, 0.0)), (0, (0.0, 0.0))], "not_lifted"),
    ],
)
def test_hand_made_histories(place, ticks, expected):
    assert _play(FakeScene(place), ticks) == expected


def test_success_wins_over_the_history():
    assert _play(FakeScene((0.3, 0.0)), [(None, (0.0, 0.0))], success=True) == "success"


def test_counts_keep_the_outcome_order_and_refuse_unknown_names():
    assert list(outcome_counts(["not_released", "success", "success"])) == ["success", "not_released"]
    assert set(OUTCOMES) >= set(outcome_counts(OUTCOMES))
    with pytest.raises(ValueError, match="unknown episode outcome"):
        outcome_counts(["success", "fell_asleep"])


def _expert_episode(task: str, seed: int, after_grasp: tuple[int, float] | None = None) -> tuple[str, bool]:
    """The expert's episode; ``after_grasp=(n, g)``: from n ticks after the grasp on, command gripper g."""
    env = TabletopEnv(task=task, cameras=())
    try:
        env.reset(seed=seed)
        expert, tracker = ScriptedExpert(env), OutcomeTracker()
        tracker.update(env)
        success, since_grasp = False, None
        for _ in range(env.max_steps):
            action = expert.act()
            if since_grasp is not None:
                since_grasp += 1
            elif tracker.held_named:
                since_grasp = 0
            if after_grasp is not None and since_grasp is not None and since_grasp >= after_grasp[0]:
                action[-1] = after_grasp[1]
            _, _, terminated, truncated, info = env.step(action)
            tracker.update(env)
            success = bool(info["is_success"])
            if success or terminated or truncated:
                break
        return tracker.outcome(env, success), success
    finally:
        env.close()


def test_real_expert_episodes_succeed_drop_in_transit_or_never_let_go():
    assert _expert_episode("pick_place", 100_000) == ("success", True)
    assert _expert_episode("pick_cube", 100_000) == ("success", True)
    # Opening (0) a few ticks after the grasp drops the cube near where it stood, far from the pad.
    assert _expert_episode("pick_place", 100_000, after_grasp=(4, 0.0)) == ("released_off_target", False)
    # Kept closed (1) all the way: the cube is still in the hand when time runs out.
    assert _expert_episode("pick_place", 100_000, after_grasp=(0, 1.0)) == ("not_released", False)
