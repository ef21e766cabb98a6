"""Reports: JSON, Markdown, plots, videos with the overlay, and the figures handed to a logger."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from vla.eval.metrics import EpisodeLog
from vla.eval.report import overlay_frame, print_results, write_report, write_video
from vla.eval.rollout import EpisodeVideo, EvalResult


def _video(seed: int = 100_000, n: int = 6) -> EpisodeVideo:
    frames = [np.full((64, 64, 3), 40 * i % 255, np.uint8) for i in range(n)]
    actors = ["-", "policy", "policy", "hold", "operator", "operator"][:n]
    overlays = [{"step": i, "actor": a, "risk": 0.1 * i if i else None, "decision": "veto (simulated)" if i == 3
                 else ""} for i, a in enumerate(actors)]
    return EpisodeVideo(seed, True, frames, overlays)


def _result(task: str, operator: str, successes: list[bool], videos=()) -> EvalResult:
    logs = [EpisodeLog(seed=100_000 + i, task=task, success=s, steps=50, policy_steps=40 if s else 50,
                       operator_steps=10 if s else 0, takeovers=int(s), risks=[0.1 + 0.1 * (not s)],
                       takeover_reasons=["scene: dropped"] if s else [],
                       decisions=[{"time": 1.0, "step": 3, "decision": "takeover", "actor": operator,
                                   "reason": "scene: dropped", "risk": None}])
            for i, s in enumerate(successes)]
    return EvalResult(task=task, operator=operator, robot="arm6", seed_start=100_000, episodes=logs, seconds=1.0,
                      videos=list(videos))


class RecordingLogger:
    def __init__(self) -> None:
        self.scalars: dict = {}
        self.images: dict = {}

    def log(self, scalars, step):
        self.scalars.update(scalars)

    def log_images(self, images, step):
        self.images.update(images)

    def finish(self):
        pass


def test_report_files_and_logged_figures(tmp_path, capsys):
    results = [_result("pick_place", "simulated", [True, True, False], [_video()]),
               _result("pick_place", "auto", [False, False, True]), _result("stack", "auto", [True, False, False])]
    logger = RecordingLogger()
    paths = write_report(results, tmp_path, logger=logger, command="python scripts/eval.py checkpoint=c")
    for name in ("report.json", "report.md", "success.png", "interventions.png"):
        assert (tmp_path / name).stat().st_size > 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["command"] == "python scripts/eval.py checkpoint=c" and "CPU cores" in data["machine"]
    run = data["runs"][0]
    assert run["metrics"]["success_rate"] == pytest.approx(2 / 3) and run["episodes"][0]["decisions"]
    md = (tmp_path / "report.md").read_text()
    assert "| pick_place | simulated | 3 | 66.7% [20.8%, 93.9%]" in md and "scripts/eval.py" in md
    assert "videos/pick_place_simulated_seed100000.mp4" in md
    video = paths["video:pick_place/simulated:0"]
    assert video.suffix == ".mp4" and iio.imread(video, plugin="pyav").shape[0] == 6
    assert logger.scalars["eval/pick_place/simulated/success_rate"] == pytest.approx(2 / 3)
    assert set(logger.images) == {"eval/success", "eval/interventions"}
    assert iio.imread(tmp_path / "success.png").ndim == 3
    print_results(results)
    assert "success [95% CI]" in capsys.readouterr().out


def test_overlay_marks_the_frame():
    frame = np.zeros((128, 128, 3), np.uint8)
    marked = overlay_frame(frame, {"step": 3, "actor": "operator", "risk": 0.25, "decision": "takeover"})
    assert marked.shape == frame.shape and marked[:20].any() and not marked[60:].any()
    # The left edge of the banner carries the colour of whoever drives.
    assert tuple(marked[5, 2]) == (230, 130, 20)


def test_gif_when_mp4_cannot_be_written(tmp_path, monkeypatch):
    real = iio.imwrite

    def no_pyav(path, frames, **kw):
        if kw.get("plugin") == "pyav":
            raise RuntimeError("no H.264 encoder")
        return real(path, frames, **kw)

    monkeypatch.setattr(iio, "imwrite", no_pyav)
    out = write_video(_video(), tmp_path / "v")
    assert out.suffix == ".gif" and out.stat().st_size > 0


def test_report_breaks_success_down_by_goal(tmp_path):
    result = _result("pick_place", "auto", [True, False, True, True])
    goals = ["red cube -> blue pad", "red cube -> blue pad", "green cube -> red pad", "green cube -> red pad"]
    for log, goal in zip(result.episodes, goals, strict=True):
        log.goal = goal
    write_report([result, _result("pick_cube", "auto", [True])], tmp_path, command="c")
    md = (tmp_path / "report.md").read_text()
    assert "| goal (object -> target) | episodes | success [95% CI] |" in md
    assert "| green cube -> red pad | 2 | 100.0% [34.2%, 100.0%] |" in md
    assert "| red cube -> blue pad | 2 | 50.0% [9.5%, 90.5%] |" in md
    assert md.count("| goal (object -> target) |") == 1  # runs without goals get no breakdown
