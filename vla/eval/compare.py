"""Side-by-side reading of evaluation reports: is a change in interventions more than chance?

A DAgger round, a new checkpoint or a different operator setting is judged by interventions per episode
on the same seeds. With a few dozen takeovers per hundred episodes, chance alone moves that figure by a
fifth, so each comparison carries the rate ratio's 95% interval (log-normal approximation for two Poisson
counts): an interval that excludes 1 is a change chance does not explain.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vla.eval.metrics import Z95
from vla.reporting import save_figure


@dataclass(frozen=True)
class RateRatio:
    ratio: float
    low: float
    high: float

    def describe(self) -> str:
        """'-54% [-65, -40]': the change in percent with its interval."""
        return f"{100 * (self.ratio - 1):+.0f}% [{100 * (self.low - 1):+.0f}, {100 * (self.high - 1):+.0f}]"


def rate_ratio(count_after: int, episodes_after: int, count_before: int, episodes_before: int,
               z: float = Z95) -> RateRatio:
    """Ratio of two event rates (after / before) with a ``z`` interval on the log scale.

    A zero count gets half an event added to both (the usual continuity correction), so the interval stays
    finite instead of collapsing to zero or infinity.
    """
    if episodes_after < 1 or episodes_before < 1:
        raise ValueError(f"both runs need episodes, got {episodes_after} and {episodes_before}")
    if count_after < 0 or count_before < 0:
        raise ValueError(f"counts must be >= 0, got {count_after} and {count_before}")
    a, b = float(count_after), float(count_before)
    if a == 0 or b == 0:
        a, b = a + 0.5, b + 0.5
    ratio = (a / episodes_after) / (b / episodes_before)
    spread = z * math.sqrt(1 / a + 1 / b)
    return RateRatio(ratio, ratio * math.exp(-spread), ratio * math.exp(spread))


def intervention_count(metrics: dict[str, Any]) -> int:
    """Takeovers and aborts over a whole run, the counts ``summarize`` reports (an intervention is either)."""
    return int(metrics["takeovers"]) + int(metrics["aborts"])


def intervention_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The change in interventions per episode between two runs' metrics, with its 95% interval."""
    count_before, count_after = intervention_count(before), intervention_count(after)
    if count_before == 0 and count_after == 0:
        return "none in either"
    return rate_ratio(count_after, int(after["episodes"]), count_before, int(before["episodes"])).describe()


@dataclass
class EvalRun:
    """One (task, operator) run of an evaluation report, as ``scripts/eval.py`` writes it."""

    label: str
    task: str
    operator: str
    seed_start: int
    metrics: dict[str, Any]

    @property
    def episodes(self) -> int:
        return int(self.metrics["episodes"])

    @property
    def interventions(self) -> int:
        return intervention_count(self.metrics)


def report_path(path: str | Path) -> Path:
    """A report.json, or a folder holding one (an eval run folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise FileNotFoundError(f"no evaluation report at {p}: pass a report.json written by scripts/eval.py, or "
                                "the run folder that holds it")
    return p


def load_runs(path: str | Path, label: str) -> list[EvalRun]:
    """Every run in one report (``also_auto=true`` reports hold the supervised and the auto run)."""
    p = report_path(path)
    try:
        report = json.loads(p.read_text())
        runs = report["runs"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{p} is not a scripts/eval.py report (no 'runs' list): {e}") from e
    return [EvalRun(label, r["task"], r["operator"], int(r["seed_start"]), r["metrics"]) for r in runs]


def pick_run(runs: Sequence[EvalRun], operator: str, task: str | None = None) -> EvalRun:
    """The run under ``operator`` (and ``task``, when the report covers several)."""
    found = [r for r in runs if r.operator == operator and (task is None or r.task == task)]
    if not found:
        have = sorted({f"{r.task}/{r.operator}" for r in runs})
        raise ValueError(f"no {task or 'any task'}/{operator} run in this report (it has {have}); evaluate with "
                         f"gate={operator}, or pick another operator")
    if len(found) > 1:
        raise ValueError(f"the report has {len(found)} {operator} runs ({sorted(r.task for r in found)}); name the "
                         "task to compare")
    return found[0]


def check_same_seeds(runs: Sequence[EvalRun]) -> None:
    """Comparisons only mean something on the same seeds: refuse runs that started elsewhere."""
    starts = {(r.seed_start, r.episodes) for r in runs}
    if len(starts) > 1:
        detail = ", ".join(f"{r.label}: {r.episodes} from seed {r.seed_start}" for r in runs)
        raise ValueError(f"the runs were evaluated on different episodes ({detail}); evaluate each on the same "
                         "seed_start and episodes")


def causes(runs: Sequence[EvalRun]) -> list[str]:
    """Takeover causes across the runs, most frequent first."""
    total: dict[str, int] = {}
    for r in runs:
        for cause, n in r.metrics.get("takeover_reasons", {}).items():
            total[cause] = total.get(cause, 0) + n
    return sorted(total, key=lambda c: (-total[c], c))


def comparison_rows(runs: Sequence[EvalRun]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per run; the change in interventions is against the first run."""
    base = runs[0]
    cause_names = causes(runs)
    header = ["run", "success [95% CI]", "without intervention", "interventions / ep",
              f"change vs {base.label} [95% CI]", *[f"{c} / ep" for c in cause_names]]
    rows = []
    for r in runs:
        m = r.metrics
        low, high = m["success_ci95"]
        change = "-" if r is base else intervention_change(base.metrics, m)
        reasons = m.get("takeover_reasons", {})
        rows.append([
            r.label,
            f"{100 * m['success_rate']:.1f}% [{100 * low:.1f}, {100 * high:.1f}]",
            f"{100 * (m['success_without_intervention'] or 0):.1f}%",
            f"{m['interventions_per_episode']:.2f} ({r.interventions})",
            change,
            *[f"{reasons.get(c, 0) / r.episodes:.2f}" for c in cause_names],
        ])
    return header, rows


def plot_takeover_causes(runs: Sequence[EvalRun], path: str | Path) -> Path:
    """Stacked bars: takeovers per episode by cause, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = causes(runs)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(runs), 3.6))
    bottom = [0.0] * len(runs)
    for cause in names:
        heights = [r.metrics.get("takeover_reasons", {}).get(cause, 0) / r.episodes for r in runs]
        ax.bar([textwrap.fill(r.label, 14) for r in runs], heights, bottom=bottom, label=cause)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("takeovers per episode")
    ax.set_title(f"{runs[0].task}, {runs[0].operator} operator\n{runs[0].episodes} episodes per run, seeds from "
                 f"{runs[0].seed_start}", fontsize=10)
    if names:
        ax.legend(fontsize=8)
    return save_figure(fig, path)
