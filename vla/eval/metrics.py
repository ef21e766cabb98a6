"""Evaluation metrics as pure functions of per-episode logs.

Definitions used throughout the reports:

* an *intervention* is an operator takeover or an abort (the person changed who drives, or stopped
  the robot); vetoes and safety clamps are counted separately;
* *autonomy* is the share of all control ticks in which the policy's own action was sent;
* *mean steps between interventions* is the number of policy-driven ticks per intervention, pooled
  over episodes (``None`` when there was no intervention);
* the risk of an episode is the largest risk score of any chunk the policy proposed in it; its AUROC
  against failure says how well the score ranks failing episodes above successful ones (0.5: chance).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vla.eval.outcomes import outcome_counts

Z95 = 1.959963984540054


@dataclass
class EpisodeLog:
    seed: int
    task: str
    success: bool
    steps: int
    policy_steps: int = 0
    operator_steps: int = 0
    hold_steps: int = 0
    takeovers: int = 0
    vetoes: int = 0
    rejections: int = 0
    aborted: bool = False
    abort_reason: str | None = None
    clamps: dict[str, int] = field(default_factory=dict)
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    risks: list[float] = field(default_factory=list)  # per proposed chunk; nan: no score
    takeover_steps: list[int] = field(default_factory=list)
    takeover_reasons: list[str] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    outcome: str = ""  # vla/eval/outcomes.py: where a failed episode went wrong ("" when not tracked)
    instruction: str = ""  # the language instruction the episode was given ("" when the env gives none)
    goal: str = ""  # what the instruction names, e.g. "blue cube -> red pad" (see vla.eval.rollout.episode_goal)

    @property
    def interventions(self) -> int:
        return self.takeovers + int(self.aborted)

    @property
    def max_risk(self) -> float:
        finite = [r for r in self.risks if math.isfinite(r)]
        return max(finite) if finite else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["risks"] = [r if math.isfinite(r) else None for r in self.risks]
        d["interventions"] = self.interventions
        d["max_risk"] = self.max_risk if math.isfinite(self.max_risk) else None
        return d


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    def __str__(self) -> str:
        if not self.trials:
            return "n/a"
        return f"{100 * self.rate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] ({self.successes}/{self.trials})"


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default ``z``)."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return float("nan"), float("nan")
    p = successes / trials
    z2 = z * z
    denom = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    # At k = 0 (k = n) the exact bound is 0 (1); floating point leaves a hair's breadth otherwise.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def rate(successes: int, trials: int) -> Rate:
    return Rate(successes, trials, *wilson_interval(successes, trials))


def success_rate(episodes: Sequence[EpisodeLog]) -> Rate:
    return rate(sum(e.success for e in episodes), len(episodes))


def success_split(episodes: Sequence[EpisodeLog]) -> dict[str, Rate]:
    """Successes without any intervention and with at least one, each over all episodes."""
    n = len(episodes)
    return {
        "without_intervention": rate(sum(e.success and e.interventions == 0 for e in episodes), n),
        "with_intervention": rate(sum(e.success and e.interventions > 0 for e in episodes), n),
    }


def success_by_goal(episodes: Sequence[EpisodeLog]) -> dict[str, Rate]:
    """Success per goal (each object/target colour pair of PickPlace, whatever the phrasing), sorted;
    empty when no episode recorded one."""
    groups: dict[str, list[bool]] = {}
    for e in episodes:
        if e.goal:
            groups.setdefault(e.goal, []).append(e.success)
    return {k: rate(sum(v), len(v)) for k, v in sorted(groups.items())}


def interventions_per_episode(episodes: Sequence[EpisodeLog]) -> float:
    return sum(e.interventions for e in episodes) / len(episodes) if episodes else float("nan")


def autonomy(episodes: Sequence[EpisodeLog]) -> float:
    steps = sum(e.steps for e in episodes)
    return sum(e.policy_steps for e in episodes) / steps if steps else float("nan")


def mean_steps_between_interventions(episodes: Sequence[EpisodeLog]) -> float | None:
    n = sum(e.interventions for e in episodes)
    return sum(e.policy_steps for e in episodes) / n if n else None


def counts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for positive ``labels`` (ties count half).

    Pairs with a non-finite score are dropped; ``nan`` when either class is empty.
    """
    if len(scores) != len(labels):
        raise ValueError(f"scores and labels differ in length: {len(scores)} vs {len(labels)}")
    pairs = [(float(s), bool(y)) for s, y in zip(scores, labels, strict=True) if math.isfinite(float(s))]
    pos = sum(y for _, y in pairs)
    neg = len(pairs) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    # Mann-Whitney U from average ranks, so tied scores share their rank.
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][0])
    ranks = [0.0] * len(pairs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and pairs[order[j + 1]][0] == pairs[order[i]][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, (_, y) in zip(ranks, pairs, strict=True) if y)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def risk_failure_auroc(episodes: Sequence[EpisodeLog]) -> float:
    return auroc([e.max_risk for e in episodes], [not e.success for e in episodes])


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def summarize(episodes: Sequence[EpisodeLog]) -> dict[str, Any]:
    """Every figure of the reports for one (task, operator) run; JSON-ready (``None`` = undefined)."""
    if not episodes:
        raise ValueError("no episodes to summarize")
    ok = success_rate(episodes)
    split = success_split(episodes)
    n = len(episodes)
    risks = [e.max_risk for e in episodes if e.success and math.isfinite(e.max_risk)]
    return {
        "episodes": n,
        "success_rate": ok.rate,
        "success_ci95": [ok.low, ok.high],
        "success_without_intervention": split["without_intervention"].rate,
        "success_without_intervention_ci95": [split["without_intervention"].low, split["without_intervention"].high],
        "success_with_intervention": split["with_intervention"].rate,
        "episodes_with_intervention": sum(e.interventions > 0 for e in episodes),
        "interventions_per_episode": interventions_per_episode(episodes),
        "takeovers": sum(e.takeovers for e in episodes),
        "autonomy": autonomy(episodes),
        "mean_steps_between_interventions": mean_steps_between_interventions(episodes),
        "vetoes": sum(e.vetoes for e in episodes),
        "vetoes_per_episode": sum(e.vetoes for e in episodes) / n,
        "aborts": sum(e.aborted for e in episodes),
        "rejections": counts(e.rejection_reasons for e in episodes),
        "safety_clamps": counts(e.clamps for e in episodes),
        "risk_failure_auroc": _finite(risk_failure_auroc(episodes)),
        # Where successful episodes' risk lies: a starting point for the escalation threshold.
        "risk_success_p50": float(np.percentile(risks, 50)) if risks else None,
        "risk_success_p90": float(np.percentile(risks, 90)) if risks else None,
        "mean_steps": sum(e.steps for e in episodes) / n,
        "takeover_reasons": counts(Counter(_reason_key(r) for r in e.takeover_reasons) for e in episodes),
        "outcomes": outcome_counts(e.outcome for e in episodes if e.outcome),
        "success_by_goal": {k: {"successes": r.successes, "episodes": r.trials, "rate": r.rate, "ci95": [r.low, r.high]}
                            for k, r in success_by_goal(episodes).items()},
    }


def _reason_key(reason: str) -> str:
    """Group free-text takeover reasons by their cause (``scene: dropped`` -> ``dropped``)."""
    if "scene:" in reason:
        return reason.split("scene:", 1)[1].strip().split(",")[0]
    if "vetoes" in reason:
        return "risk after vetoes"
    if "operator pressed" in reason:
        return "operator key"
    return reason.split(":")[0][:40]
