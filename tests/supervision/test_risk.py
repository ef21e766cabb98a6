"""Risk scores: sample disagreement and chunk inconsistency against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla.supervision.config import RiskConfig
from vla.supervision.risk import (
    RiskEstimator,
    RiskScore,
    chunk_inconsistency,
    resolve_risk_kind,
    sample_disagreement,
)

N_ARM = 2  # actions are [joint0, joint1, gripper]


def test_identical_samples_have_no_disagreement():
    samples = np.tile(np.array([[0.1, 0.2, 1.0]] * 5), (3, 1, 1))
    assert sample_disagreement(samples, N_ARM) == pytest.approx(0.0, abs=1e-12)


def test_sample_disagreement_known_value():
    samples = np.zeros((2, 4, 3))
    samples[1, :, 0] = 0.2  # joint 0: std 0.1 on every step
    samples[1, :, 1] = 0.1  # joint 1: std 0.05 (the largest joint counts)
    samples[1, :, 2] = 1.0  # gripper: std 0.5
    assert sample_disagreement(samples, N_ARM, gripper_weight=0.5) == pytest.approx(0.1 + 0.5 * 0.5)


def test_sample_disagreement_needs_two_samples():
    with pytest.raises(ValueError, match="k >= 2"):
        sample_disagreement(np.zeros((1, 4, 3)), N_ARM)


def test_consistent_overlapping_chunks_score_zero():
    plan = np.linspace(0, 1, 12)[:, None] * np.ones((1, 3))
    assert chunk_inconsistency(plan[0:8], plan[3:11], offset=3, n_arm=N_ARM) == 0.0


def test_chunk_inconsistency_known_value():
    previous = np.zeros((6, 3))
    current = np.zeros((6, 3))
    current[:, 1] = 0.3  # the new chunk disagrees by 0.3 rad where it overlaps the old one
    current[:2, 2] = 1.0  # and wants the gripper closed on 2 of the 4 overlapping steps
    value = chunk_inconsistency(previous, current, offset=2, n_arm=N_ARM, gripper_weight=0.5)
    assert value == pytest.approx(0.3 + 0.5 * 0.5)


def test_no_overlap_gives_nan():
    assert math.isnan(chunk_inconsistency(np.zeros((4, 3)), np.zeros((4, 3)), offset=4, n_arm=N_ARM))


def test_estimator_remembers_and_forgets_the_previous_chunk():
    est = RiskEstimator(RiskConfig(consistency_threshold=0.2), "consistency", N_ARM)
    chunk = np.zeros((4, 3))
    assert math.isnan(est.score(chunk, step=0).value)
    s = est.score(chunk + np.array([0.5, 0.0, 0.0]), step=1)
    assert s.value == pytest.approx(0.5) and s.high
    est.forget()
    assert math.isnan(est.score(chunk, step=2).value)
    assert est.n_samples == 1


def test_sample_estimator_requests_samples():
    est = RiskEstimator(RiskConfig(n_samples=5, sample_threshold=0.05), "samples", N_ARM)
    assert est.n_samples == 5
    samples = np.zeros((5, 4, 3))
    samples[0, :, 0] = 1.0
    s = est.score(samples[0], step=0, samples=samples)
    assert s.value == pytest.approx(np.std([1.0, 0, 0, 0, 0])) and s.high


def test_nan_risk_never_escalates():
    assert not RiskScore(float("nan"), "consistency", 0.0).high
    assert "n/a" in RiskScore(float("nan"), "consistency", 0.0).describe()


def test_auto_kind_follows_the_policy():
    class Flow:
        stochastic = True

    assert resolve_risk_kind("auto", Flow()) == "samples"
    assert resolve_risk_kind("auto", object()) == "consistency"
    assert resolve_risk_kind("none", Flow()) == "none"
