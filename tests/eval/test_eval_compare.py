"""Comparing evaluation reports: the rate ratio's interval, picking runs, refusing mismatched seeds, the script."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vla.eval.compare import (
    check_same_seeds,
    comparison_rows,
    intervention_change,
    load_runs,
    pick_run,
    rate_ratio,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import compare_evals


def test_rate_ratio_matches_the_log_normal_interval():
    # 81 interventions in 300 episodes after, 177 in 300 before: RR 0.4576, 95% CI 0.3518-0.5952 (the log-normal
    # interval for a ratio of two Poisson rates, worked by hand: exp(ln RR +- 1.96 sqrt(1/81 + 1/177))).
    rr = rate_ratio(81, 300, 177, 300)
    assert rr.ratio == pytest.approx(0.45763, abs=1e-5)
    assert (rr.low, rr.high) == (pytest.approx(0.35182, abs=1e-5), pytest.approx(0.59525, abs=1e-5))
    assert rr.describe() == "-54% [-65, -40]"


def test_the_change_in_interventions_carries_its_interval():
    # 177 -> 81 interventions over 300 episodes each: a rate ratio of 0.458, 95% CI 0.352-0.595.
    before = {"takeovers": 170, "aborts": 7, "episodes": 300}
    assert intervention_change(before, {"takeovers": 81, "aborts": 0, "episodes": 300}) == "-54% [-65, -40]"
    none = {"takeovers": 0, "aborts": 0, "episodes": 20}
    assert intervention_change(none, none) == "none in either"


def test_rate_ratio_of_unequal_run_lengths_compares_rates_not_counts():
    assert rate_ratio(30, 300, 10, 100).ratio == pytest.approx(1.0)


def test_a_zero_count_keeps_the_interval_finite():
    rr = rate_ratio(0, 100, 10, 100)
    assert 0 < rr.low < rr.ratio < rr.high < 1  # 0.5 / 10.5 with half an event added to each count
    assert rr.ratio == pytest.approx(0.5 / 10.5)


@pytest.mark.parametrize("args", [(1, 0, 1, 10), (1, 10, -1, 10)])
def test_rate_ratio_refuses_impossible_counts(args):
    with pytest.raises(ValueError):
        rate_ratio(*args)


def metrics(episodes: int, interventions: int, reasons: dict[str, int], success: float = 1.0) -> dict:
    return {"episodes": episodes, "interventions_per_episode": interventions / episodes, "takeovers": interventions,
            "aborts": 0, "success_rate": success,
            "success_ci95": [success - 0.05, min(1.0, success + 0.05)], "success_without_intervention": 0.5,
            "takeover_reasons": reasons}


def write_report(folder: Path, runs: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"command": "python scripts/eval.py ...", "runs": runs}))
    return folder


def run(operator: str, m: dict, task: str = "pick_place", seed_start: int = 100_000) -> dict:
    return {"task": task, "operator": operator, "seed_start": seed_start, "metrics": m}


@pytest.fixture
def before_after(tmp_path: Path) -> tuple[Path, Path]:
    before = write_report(tmp_path / "before", [
        run("simulated", metrics(100, 40, {"no_progress": 30, "dropped": 10})),
        run("auto", metrics(100, 0, {}, success=0.6)),
    ])
    after = write_report(tmp_path / "after", [
        run("simulated", metrics(100, 20, {"no_progress": 5, "dropped": 12, "time_running_out": 3})),
    ])
    return before, after


def test_rows_give_the_change_against_the_first_run_and_every_cause(before_after):
    before, after = before_after
    runs = [pick_run(load_runs(before, "before"), "simulated"), pick_run(load_runs(after, "after"), "simulated")]
    header, rows = comparison_rows(runs)
    assert header[4:] == ["change vs before [95% CI]", "no_progress / ep", "dropped / ep", "time_running_out / ep"]
    assert rows[0][3:] == ["0.40 (40)", "-", "0.30", "0.10", "0.00"]
    assert rows[1][3:] == ["0.20 (20)", rate_ratio(20, 100, 40, 100).describe(), "0.05", "0.12", "0.03"]


def test_no_interventions_in_either_run_is_said_so(before_after, tmp_path):
    before, _ = before_after
    other = write_report(tmp_path / "other", [run("auto", metrics(100, 0, {}, success=0.7))])
    _, rows = comparison_rows([pick_run(load_runs(before, "a"), "auto"), pick_run(load_runs(other, "b"), "auto")])
    assert rows[1][4] == "none in either"


def test_picking_a_run_the_report_lacks_names_what_it_has(before_after):
    _, after = before_after
    with pytest.raises(ValueError, match=r"pick_place/simulated"):
        pick_run(load_runs(after, "after"), "auto")


def test_a_report_with_several_tasks_needs_the_task_named(tmp_path):
    both = write_report(tmp_path / "both", [run("auto", metrics(10, 0, {})), run("auto", metrics(10, 0, {}), "x")])
    with pytest.raises(ValueError, match="name the task"):
        pick_run(load_runs(both, "b"), "auto")
    assert pick_run(load_runs(both, "b"), "auto", task="x").task == "x"


def test_runs_on_different_seeds_are_refused(before_after, tmp_path):
    before, _ = before_after
    elsewhere = write_report(tmp_path / "elsewhere", [run("simulated", metrics(100, 5, {}), seed_start=0)])
    runs = [pick_run(load_runs(before, "a"), "simulated"), pick_run(load_runs(elsewhere, "b"), "simulated")]
    with pytest.raises(ValueError, match="different episodes"):
        check_same_seeds(runs)


def test_a_missing_or_foreign_report_gets_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no evaluation report"):
        load_runs(tmp_path / "nothing", "x")
    (tmp_path / "foreign.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match=r"not a scripts/eval\.py report"):
        load_runs(tmp_path / "foreign.json", "x")


def test_the_script_prints_rows_and_draws_the_causes(before_after, tmp_path):
    before, after = before_after
    plot = tmp_path / "fig" / "takeovers.png"
    rows = compare_evals.main([f"before={before}", f"after={after / 'report.json'}", "--plot", str(plot)])
    assert [r[0] for r in rows] == ["before", "after"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["only=one"], ["before", "after=x"], ["a=/nonexistent", "b=/nonexistent"]])
def test_the_script_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        compare_evals.main(argv)
