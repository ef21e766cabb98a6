"""Joining bench_policies.py reports into one success figure: what is joined, what is refused, what is drawn."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vla.baselines.figure import load_results, plot_success

ROOT = Path(__file__).resolve().parents[2]


def row(method: str, successes: int, task: str = "pick_place", steps: int = 2000, batch_size: int | None = 64,
        language: bool = False) -> dict:
    fit = {"steps": steps, "final_loss": 0.1, "samples_per_s": 10.0, "seconds": 1.0}
    if batch_size is not None:
        fit["batch_size"] = batch_size
    rate = successes / 50
    return {"task": task, "method": method, "label": method.upper(), "uses_language": language, "fit": fit,
            "successes": successes, "episodes": 50, "success_rate": rate, "ci_low": max(0.0, rate - 0.1),
            "ci_high": min(1.0, rate + 0.1)}


def report(path: Path, *rows: dict) -> Path:
    path.write_text(json.dumps({"command": "python scripts/bench_policies.py ...", "results": list(rows)}))
    return path


def test_reports_of_one_comparison_are_joined_in_order(tmp_path: Path) -> None:
    first = report(tmp_path / "a.json", row("vla_l1", 13, language=True), row("act", 0))
    # A report written before batch sizes were recorded joins one that records them.
    second = report(tmp_path / "b.json", row("diffusion", 2, batch_size=None))
    rows = load_results([first, second])
    assert [r["method"] for r in rows] == ["vla_l1", "act", "diffusion"]


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (row("diffusion", 2, steps=1000), "differ in steps"),
        (row("diffusion", 2, batch_size=128), "differ in batch_size"),
        (row("act", 3), "in both"),
    ],
)
def test_rows_that_do_not_compare_are_refused(tmp_path: Path, second: dict, message: str) -> None:
    first = report(tmp_path / "a.json", row("vla_l1", 13, language=True), row("act", 0))
    with pytest.raises(ValueError, match=message):
        load_results([first, report(tmp_path / "b.json", second)])


def test_other_tasks_keep_their_own_budget(tmp_path: Path) -> None:
    rows = load_results([report(tmp_path / "a.json", row("act", 0), row("act", 7, task="pick_cube", steps=1500))])
    assert len(rows) == 2


def test_missing_or_foreign_files_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"bench_policies\.py --json"):
        load_results([tmp_path / "none.json"])
    (tmp_path / "eval.json").write_text(json.dumps({"runs": []}))
    with pytest.raises(ValueError, match=r"not a bench_policies\.py --json report"):
        load_results([tmp_path / "eval.json"])
    bad = row("act", 0)
    del bad["ci_low"]
    with pytest.raises(ValueError, match=r"lacks \['ci_low'\]"):
        load_results([report(tmp_path / "bad.json", bad)])
    with pytest.raises(ValueError, match="no results"):
        load_results([report(tmp_path / "empty.json")])


def test_script_draws_the_joined_figure(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("plot_policies", ROOT / "scripts" / "plot_policies.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    first = report(tmp_path / "a.json", row("vla_l1", 13, language=True), row("act", 0))
    second = report(tmp_path / "b.json", row("diffusion", 2))
    out = script.main([str(first), str(second), "--out", str(tmp_path / "fig" / "p.png"), "--title", "CPU"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "26.0% [16.0, 36.0] (13/50)" in printed and "DIFFUSION" in printed
    with pytest.raises(SystemExit):
        script.main([str(first), str(report(tmp_path / "c.json", row("act", 1))), "--out", str(tmp_path / "x.png")])
    assert "in both" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plot_writes_a_png_for_several_tasks(tmp_path: Path) -> None:
    rows = [row("act", 0), row("vla_l1", 30, language=True), row("act", 7, task="pick_cube")]
    out = plot_success(rows, tmp_path / "p.png", "a title " * 30)
    assert out.stat().st_size > 1000
