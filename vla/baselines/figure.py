"""Success of compared policies with their Wilson 95% intervals, drawn from ``bench_policies.py --json`` reports.

A comparison can be run in pieces (one method per run, on different machines or days); the figure joins the
pieces only where they share the budget that makes them comparable: per task, the same gradient steps and
batch size for every row.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vla.reporting import save_figure

REQUIRED = ("task", "method", "label", "uses_language", "fit", "successes", "episodes", "success_rate", "ci_low",
            "ci_high")


def load_results(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The rows of every report, in order; a method that appears twice for a task is refused, as is a task
    whose rows were trained for different budgets."""
    rows: list[dict[str, Any]] = []
    origin: dict[tuple[str, str], Path] = {}
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such report; write one with bench_policies.py --json {path}")
        try:
            results = json.loads(path.read_text())["results"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a bench_policies.py --json report ({exc})") from exc
        for row in results:
            missing = [k for k in REQUIRED if not isinstance(row, dict) or k not in row]
            if missing:
                raise ValueError(f"{path}: a result lacks {missing}; write reports with bench_policies.py --json")
            key = (row["task"], row["method"])
            if key in origin:
                raise ValueError(f"{row['task']} / {row['method']} is in both {origin[key]} and {path}; "
                                 "pass one report per method and task")
            origin[key] = path
            rows.append(row)
    if not rows:
        raise ValueError(f"no results in {[str(p) for p in paths]}")
    _check_budgets(rows, origin)
    return rows


def _check_budgets(rows: list[dict[str, Any]], origin: dict[tuple[str, str], Path]) -> None:
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        for field in ("steps", "batch_size"):
            values = {r["fit"].get(field, 0) for r in task_rows} - {0}  # 0: not recorded
            if len(values) > 1:
                detail = ", ".join(f"{r['method']} {r['fit'].get(field)} ({origin[(task, r['method'])]})"
                                   for r in task_rows)
                raise ValueError(f"{task}: the reports differ in {field} ({detail}); "
                                 "only rows trained on the same budget are compared")


def plot_success(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Horizontal bars, one per method, grouped by task: success with its Wilson 95% interval. Methods that
    read the instruction come first; those that take none are grey and say so (a 0% bar has no area to mark)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7.0, 1.2 + 0.6 * len(rows)), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        task_rows = sorted((r for r in rows if r["task"] == task), key=lambda r: not r["uses_language"])
        y = list(range(len(task_rows)))[::-1]
        rate = [100 * r["success_rate"] for r in task_rows]
        err = [[100 * (r["success_rate"] - r["ci_low"]) for r in task_rows],
               [100 * (r["ci_high"] - r["success_rate"]) for r in task_rows]]
        bars = ax.barh(y, rate, xerr=err, capsize=4, color=["C0" if r["uses_language"] else "C7" for r in task_rows])
        for bar, r in zip(bars, task_rows, strict=True):
            ax.text(min(100 * r["ci_high"] + 1.5, 92), bar.get_y() + bar.get_height() / 2,
                    f"{100 * r['success_rate']:.0f}% ({r['successes']}/{r['episodes']})", va="center", fontsize=8)
        ax.set_yticks(y, [r["label"] + ("" if r["uses_language"] else "\nno instruction input") for r in task_rows],
                      fontsize=8)
        ax.set_xlim(0, 100)
        fit = task_rows[0]["fit"]
        budget = f"{fit['steps']} steps" + (f" x batch {fit['batch_size']}" if fit.get("batch_size") else "")
        ax.set_title(f"{task}: {budget}", fontsize=9)
    axes[-1, 0].set_xlabel("success, % (Wilson 95% interval)")
    if title:
        fig.suptitle(textwrap.fill(title, 100), fontsize=9)
    return save_figure(fig, path)
