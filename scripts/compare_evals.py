"""Compare evaluation reports of the same seeds: success, interventions with the change's 95% interval, causes.

    python scripts/compare_evals.py before=outputs/eval/base after=outputs/dagger/eval \
        --operator simulated --plot docs/figures/takeovers.png

Each argument is LABEL=PATH, PATH a report.json written by scripts/eval.py or the run folder holding it. The
first run is the baseline; every other run's change in interventions per episode is a rate ratio against it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla.eval.compare import check_same_seeds, comparison_rows, load_runs, pick_run, plot_takeover_causes
from vla.reporting import print_grid


def parse_labelled(item: str) -> tuple[str, str]:
    label, sep, path = item.partition("=")
    if not sep or not label or not path:
        raise ValueError(f"{item!r} is not LABEL=PATH (e.g. before=outputs/eval/base)")
    return label, path


def main(argv: list[str] | None = None) -> list[list[str]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", help="LABEL=PATH, the baseline first")
    p.add_argument("--operator", default="simulated", help="which run of each report (auto | simulated | terminal)")
    p.add_argument("--task", default=None, help="task, when a report covers several")
    p.add_argument("--plot", type=Path, default=None, help="also draw takeovers per episode by cause to this PNG")
    a = p.parse_args(argv)
    if len(a.reports) < 2:
        p.error("give at least two reports: a baseline and one to compare with it")
    try:
        runs = [pick_run(load_runs(path, label), a.operator, a.task)
                for label, path in map(parse_labelled, a.reports)]
        check_same_seeds(runs)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    header, rows = comparison_rows(runs)
    print_grid(f"{runs[0].task}, {a.operator} operator: {runs[0].episodes} episodes from seed {runs[0].seed_start}",
               header, rows)
    if a.plot is not None:
        print(f"plot: {plot_takeover_causes(runs, a.plot)}")
    return rows


if __name__ == "__main__":
    main()
