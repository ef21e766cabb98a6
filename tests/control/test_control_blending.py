"""Chunk blending math on hand-made chunks, and the tick-indexed queue that applies it."""

from __future__ import annotations

import numpy as np
import pytest

from vla.supervision.blending import (
    ActionQueue,
    crossfade,
    crossfade_weights,
    ensemble_weights,
    temporal_ensemble,
)


def test_crossfade_weights_rise_linearly_and_never_reach_the_ends():
    np.testing.assert_allclose(crossfade_weights(3), [0.25, 0.5, 0.75])
    assert crossfade_weights(0).shape == (0,)
    with pytest.raises(ValueError):
        crossfade_weights(-1)


def test_crossfade_blends_the_overlap_and_keeps_the_new_tail():
    old = np.zeros((3, 2))  # old plan: stay at 0
    new = np.full((5, 2), 4.0)  # new plan: go to 4
    out = crossfade(old, new)
    np.testing.assert_allclose(out[:, 0], [1.0, 2.0, 3.0, 4.0, 4.0])


def test_crossfade_takes_gripper_from_the_new_chunk():
    old = np.array([[0.0, 0.0], [0.0, 0.0]])
    new = np.array([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0]])
    out = crossfade(old, new, gripper_dims=(1,))
    np.testing.assert_allclose(out[:, 1], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(out[:, 0], [2 / 3, 4 / 3, 2.0])


def test_crossfade_drops_old_actions_past_the_new_chunk():
    out = crossfade(np.zeros((6, 1)), np.ones((2, 1)))
    assert out.shape == (2, 1)
    np.testing.assert_allclose(out[:, 0], [1 / 3, 2 / 3])


def test_ensemble_weights_follow_act_exponential_scheme():
    w = ensemble_weights(3, m=0.5)
    raw = np.exp(-0.5 * np.arange(3))
    np.testing.assert_allclose(w, raw / raw.sum())
    np.testing.assert_allclose(ensemble_weights(4, 0.0), 0.25)
    assert ensemble_weights(3, -1.0)[-1] > ensemble_weights(3, -1.0)[0]  # m < 0 favours the newest


def test_temporal_ensemble_is_the_weighted_mean():
    preds = np.array([[0.0, 0.0], [3.0, 1.0]])
    w = ensemble_weights(2, 0.1)
    out = temporal_ensemble(preds, 0.1, gripper_dims=(1,))
    assert out[0] == pytest.approx(w[1] * 3.0)
    assert out[1] == 1.0  # gripper: newest prediction, not averaged


def test_queue_aligns_a_late_chunk_with_time():
    q = ActionQueue("none")
    chunk = np.arange(6, dtype=float)[:, None]  # plans ticks 10..15 (predicted from tick 10's observation)
    assert q.push(chunk, start_tick=10, now=13) == 3  # arrived 3 ticks late: ticks 10..12 are gone
    assert q.remaining(13) == 3
    assert q.pop(13)[0] == 3.0
    assert q.pop(15)[0] == 5.0  # tick 14 was never executed: skipped, not replayed later
    assert q.pop(16) is None


def test_queue_rejects_a_chunk_entirely_in_the_past():
    q = ActionQueue("crossfade")
    assert q.push(np.ones((3, 1)), start_tick=0, now=5) == 0
    assert q.remaining(5) == 0


def test_queue_crossfades_the_overlap():
    q = ActionQueue("crossfade")
    q.push(np.zeros((6, 1)), start_tick=0, now=0)
    assert q.pop(0)[0] == 0.0 and q.pop(1)[0] == 0.0
    q.push(np.full((6, 1), 8.0), start_tick=2, now=2)  # ticks 2..5 overlap (4 ticks), 6..7 are new only
    got = [q.pop(t)[0] for t in range(2, 8)]
    np.testing.assert_allclose(got, [8 * 0.2, 8 * 0.4, 8 * 0.6, 8 * 0.8, 8.0, 8.0])


def test_queue_ensembles_every_prediction_of_a_tick():
    q = ActionQueue("ensemble", ensemble_m=0.0)
    q.push(np.zeros((4, 1)), start_tick=0, now=0)
    q.push(np.full((4, 1), 2.0), start_tick=2, now=2)
    assert q.pop(2)[0] == pytest.approx(1.0)  # two equal-weight predictions
    assert q.pop(4)[0] == pytest.approx(2.0)  # only the newer chunk covers tick 4


def test_queue_none_mode_switches_plans_outright():
    q = ActionQueue("none")
    q.push(np.zeros((4, 1)), 0, 0)
    q.push(np.ones((2, 1)), 1, 1)
    assert q.pop(1)[0] == 1.0
    assert q.remaining(2) == 1  # the old plan's tail past the new chunk is dropped


def test_queue_rejects_unknown_mode():
    with pytest.raises(ValueError, match=r"control\.blend"):
        ActionQueue("average")
