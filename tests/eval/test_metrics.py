"""Metric functions on hand-made episode logs, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from vla.eval.metrics import (
    EpisodeLog,
    auroc,
    autonomy,
    interventions_per_episode,
    mean_steps_between_interventions,
    risk_failure_auroc,
    success_by_goal,
    success_rate,
    success_split,
    summarize,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(8, 10, (0.4902, 0.9433)), (0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)), (50, 100, (0.4038, 0.5962)),
     (99, 100, (0.9455, 0.9982))],
)
def test_wilson_interval_known_values(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4) and hi == pytest.approx(expected[1], abs=1e-4)


def test_wilson_interval_edge_cases():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # the scikit-learn documentation example
     ([1, 2, 3, 4], [0, 0, 1, 1], 1.0), ([1, 2, 3, 4], [1, 1, 0, 0], 0.0),
     ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5), ([1, 2, 2, 3], [0, 0, 1, 1], 0.875)],
)
def test_auroc_known_cases(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_drops_missing_scores_and_needs_both_classes():
    assert auroc([float("nan"), 0.1, 0.9], [0, 0, 1]) == 1.0
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def _logs() -> list[EpisodeLog]:
    return [
        # autonomous success
        EpisodeLog(seed=0, task="t", success=True, steps=40, policy_steps=40, risks=[0.1, 0.2]),
        # rescued: one takeover of 20 ticks, two vetoes
        EpisodeLog(seed=1, task="t", success=True, steps=60, policy_steps=38, operator_steps=20, hold_steps=2,
                   takeovers=1, vetoes=2, risks=[0.3, float("nan"), 0.9], clamps={"joint_step": 3}),
        # failed although helped twice, then aborted
        EpisodeLog(seed=2, task="t", success=False, steps=80, policy_steps=50, operator_steps=30, takeovers=2,
                   aborted=True, risks=[0.7], clamps={"joint_step": 1, "below_table": 2}),
        # failed alone
        EpisodeLog(seed=3, task="t", success=False, steps=80, policy_steps=80, risks=[0.4]),
    ]


def test_rates_and_intervention_figures():
    logs = _logs()
    ok = success_rate(logs)
    assert (ok.successes, ok.trials, ok.rate) == (2, 4, 0.5)
    split = success_split(logs)
    assert split["without_intervention"].successes == 1 and split["with_intervention"].successes == 1
    assert interventions_per_episode(logs) == pytest.approx((0 + 1 + 3 + 0) / 4)  # takeovers + the abort
    assert autonomy(logs) == pytest.approx((40 + 38 + 50 + 80) / (40 + 60 + 80 + 80))
    assert mean_steps_between_interventions(logs) == pytest.approx(208 / 4)
    assert mean_steps_between_interventions(logs[:1]) is None
    # Episode risk = the largest score: failures 0.7 and 0.4 vs successes 0.2 and 0.9 -> 2 of 4 pairs ranked right.
    assert risk_failure_auroc(logs) == pytest.approx(0.5)


def test_summary_is_json_ready():
    import json

    m = summarize(_logs())
    json.dumps(m)
    assert m["safety_clamps"] == {"below_table": 2, "joint_step": 4}
    assert m["vetoes"] == 2 and m["aborts"] == 1 and m["takeovers"] == 3 and m["episodes_with_intervention"] == 2
    assert m["success_ci95"] == pytest.approx(list(wilson_interval(2, 4)))
    assert m["risk_success_p50"] == pytest.approx(0.55) and m["mean_steps"] == 65
    log = _logs()[1].to_dict()
    assert log["risks"][1] is None and log["interventions"] == 1 and log["max_risk"] == 0.9


def test_success_by_goal_groups_episodes_by_what_the_instruction_names():
    rows = [("red cube -> blue pad", "put the red cube on the blue pad", True),
            ("red cube -> blue pad", "move the red block to the blue target", False),
            ("green cube -> blue pad", "put the green cube on the blue pad", True),
            ("red cube -> blue pad", "place the red cube onto the blue pad", True), ("", "", True)]
    logs = [EpisodeLog(seed=i, task="pick_place", success=ok, steps=10, instruction=text, goal=goal)
            for i, (goal, text, ok) in enumerate(rows)]
    by = success_by_goal(logs)
    assert list(by) == ["green cube -> blue pad", "red cube -> blue pad"]  # sorted; no goal: left out
    red = by["red cube -> blue pad"]  # three phrasings of one goal count together
    assert (red.successes, red.trials) == (2, 3) and (red.low, red.high) == pytest.approx(wilson_interval(2, 3))
    assert (by["green cube -> blue pad"].successes, by["green cube -> blue pad"].trials) == (1, 1)
    m = summarize(logs)["success_by_goal"]
    assert m["red cube -> blue pad"]["episodes"] == 3 and m["red cube -> blue pad"]["rate"] == pytest.approx(2 / 3)
    assert summarize(_logs())["success_by_goal"] == {}
