"""Evaluation reports: a console table, JSON + Markdown, PNG plots, MP4 videos with an overlay.

The overlay on every video frame says who drives (policy / operator / hold / stopped, colour coded),
the latest risk score and the latest gate decision. MP4 is written through imageio's PyAV plugin
(H.264); only if that fails is the video written as a GIF instead, with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vla.eval.rollout import EpisodeVideo, EvalResult
from vla.reporting import print_grid

log = logging.getLogger(__name__)

ACTOR_COLOURS = {"policy": (40, 150, 60), "operator": (230, 130, 20), "hold": (200, 180, 30),
                 "stopped": (200, 40, 40), "-": (90, 90, 90)}
HEADER = ("task", "operator", "episodes", "success [95% CI]", "no-intervention success", "interventions/ep",
          "autonomy", "steps/intervention", "vetoes/ep", "aborts", "clamps", "risk AUROC")


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _row(r: EvalResult) -> list[str]:
    m = r.metrics
    lo, hi = m["success_ci95"]
    return [r.task, r.operator, str(m["episodes"]), f"{_pct(m['success_rate'])} [{_pct(lo)}, {_pct(hi)}]",
            _pct(m["success_without_intervention"]), _num(m["interventions_per_episode"]), _pct(m["autonomy"]),
            _num(m["mean_steps_between_interventions"], ".1f"), _num(m["vetoes_per_episode"]), str(m["aborts"]),
            str(sum(m["safety_clamps"].values())), _num(m["risk_failure_auroc"])]


def print_results(results: Sequence[EvalResult], title: str = "Evaluation") -> None:
    """One column per run, one row per figure (narrow enough for an 80-column SSH terminal)."""
    rows = [_row(r) for r in results]
    header = ["figure", *(f"{row[0]} / {row[1]}" for row in rows)]
    print_grid(title, header, [[name, *(row[i] for row in rows)] for i, name in enumerate(HEADER) if i >= 2])


def machine() -> str:
    """One line naming the machine the figures came from."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, "
            f"Python {platform.python_version()})")


# --------------------------------------------------------------------------------- videos
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def overlay_frame(frame: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Draw a banner with who drives, the risk and the latest decision over the top of ``frame``."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(frame))
    w = img.width
    size = max(9, w // 26)
    draw = ImageDraw.Draw(img, "RGBA")
    actor = str(info.get("actor", "-"))
    draw.rectangle([0, 0, w, 2 * size + 8], fill=(0, 0, 0, 150))
    draw.rectangle([0, 0, 6, 2 * size + 8], fill=ACTOR_COLOURS.get(actor, (90, 90, 90)))
    risk = info.get("risk")
    risk_text = "n/a" if risk is None else f"{risk:.3f}"
    font = _font(size)
    draw.text((10, 2), f"step {info.get('step', 0)}  {actor.upper()}  risk {risk_text}", fill="white", font=font)
    draw.text((10, size + 5), str(info.get("decision", ""))[: max(10, w // (size // 2 + 1))], fill=(220, 220, 220),
              font=font)
    return np.asarray(img)


def write_video(video: EpisodeVideo, path: str | Path, fps: int = 10) -> Path:
    """Write the frames with their overlay as MP4 (H.264); falls back to GIF if MP4 cannot be written."""
    import imageio.v3 as iio

    frames = [overlay_frame(f, o) for f, o in zip(video.frames, video.overlays, strict=True)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        iio.imwrite(path.with_suffix(".mp4"), frames, fps=fps, plugin="pyav", codec="libx264")
        return path.with_suffix(".mp4")
    except Exception as exc:  # no H.264 encoder in this PyAV build
        log.warning("could not write MP4 (%s); writing a GIF instead", exc)
        gif = path.with_suffix(".gif")
        iio.imwrite(gif, frames, duration=1000 / fps, loop=0, plugin="pillow")
        return gif


# --------------------------------------------------------------------------------- plots
def plot_per_task(results: Sequence[EvalResult], out_dir: str | Path) -> dict[str, Path]:
    """``success.png`` (with Wilson 95% intervals) and ``interventions.png``: bars per task and operator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    tasks = list(dict.fromkeys(r.task for r in results))
    operators = list(dict.fromkeys(r.operator for r in results))
    width = 0.8 / len(operators)
    x = np.arange(len(tasks))
    paths = {}
    for name, ylabel in (("success", "success rate"), ("interventions", "interventions per episode")):
        fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(tasks), 3.4))
        for j, op in enumerate(operators):
            vals, errs = [], [[], []]
            for t in tasks:
                r = next((r for r in results if r.task == t and r.operator == op), None)
                m = r.metrics if r is not None else None
                if name == "success":
                    v = m["success_rate"] if m else float("nan")
                    lo, hi = m["success_ci95"] if m else (v, v)
                    errs[0].append(max(0.0, v - lo))  # rounding can put the bound a hair past the rate
                    errs[1].append(max(0.0, hi - v))
                else:
                    v = m["interventions_per_episode"] if m else float("nan")
                vals.append(v)
            ax.bar(x + (j - (len(operators) - 1) / 2) * width, vals, width, label=op,
                   yerr=errs if name == "success" else None, capsize=3)
        ax.set_xticks(x, tasks)
        ax.set_ylabel(ylabel)
        if name == "success":
            ax.set_ylim(0, 1.05)
        ax.legend(title="operator", fontsize=8)
        ax.set_title(f"{ylabel} per task")
        fig.tight_layout()
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=100)
        plt.close(fig)
    return paths


# --------------------------------------------------------------------------------- markdown
def _markdown(results: Sequence[EvalResult], command: str, videos: dict[str, list[Path]]) -> str:
    lines = ["# Evaluation report", "", f"- command: `{command}`", f"- machine: {machine()}",
             f"- written: {datetime.now(UTC).isoformat(timespec='seconds')}", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    lines += ["", "Interventions are operator takeovers and aborts; autonomy is the share of control ticks "
              "driven by the policy; the risk AUROC ranks episodes by their largest risk score against failure.",
              ""]
    for r in results:
        m = r.metrics
        lines += [f"## {r.task} / {r.operator}", "",
                  f"- seeds {r.seed_start}..{r.seed_start + m['episodes'] - 1}, {r.seconds:.1f} s",
                  f"- success with intervention: {_pct(m['success_with_intervention'])} "
                  f"({m['episodes_with_intervention']} episodes had an intervention)",
                  f"- takeovers: {m['takeovers']} by cause {m['takeover_reasons'] or '{}'}; vetoes: {m['vetoes']}; "
                  f"aborts: {m['aborts']}",
                  f"- safety clamps by reason: {m['safety_clamps'] or 'none'}; rejected chunks by reason: "
                  f"{m['rejections'] or 'none'}",
                  f"- risk of successful episodes: median {_num(m['risk_success_p50'], '.3f')}, "
                  f"90th percentile {_num(m['risk_success_p90'], '.3f')}",
                  f"- mean episode length: {m['mean_steps']:.1f} steps",
                  f"- outcomes: {m.get('outcomes') or 'not tracked'}"]
        by_goal = m.get("success_by_goal") or {}
        if len(by_goal) > 1:  # one goal: the run's own row already says it
            lines += ["", "| goal (object -> target) | episodes | success [95% CI] |", "|---|---|---|"]
            lines += [f"| {k} | {v['episodes']} | {_pct(v['rate'])} [{_pct(v['ci95'][0])}, {_pct(v['ci95'][1])}] |"
                      for k, v in by_goal.items()]
            lines.append("")
        for v in videos.get(f"{r.task}/{r.operator}", []):
            lines.append(f"- video: [{v.name}](videos/{v.name})")
        lines.append("")
    lines += ["![success per task](success.png)", "", "![interventions per task](interventions.png)", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------- all of it
def write_report(
    results: EvalResult | Sequence[EvalResult],
    out_dir: str | Path,
    logger: Any = None,
    command: str = "",
    step: int = 0,
) -> dict[str, Path]:
    """Write report.json, report.md, success.png, interventions.png and videos/ into ``out_dir``.

    ``logger`` (a RunLogger: ``log(scalars, step)``, ``log_images(images, step)``) receives the figures
    and plots too; videos go to its wandb run when it has one.
    """
    results = [results] if isinstance(results, EvalResult) else list(results)
    if not results:
        raise ValueError("no evaluation results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos: dict[str, list[Path]] = {}
    for r in results:
        for v in r.videos:
            path = write_video(v, out / "videos" / f"{r.task}_{r.operator}_seed{v.seed}", r.fps)
            videos.setdefault(f"{r.task}/{r.operator}", []).append(path)
    paths = {"json": out / "report.json", "markdown": out / "report.md", **plot_per_task(results, out)}
    payload = {"command": command, "machine": machine(), "written": datetime.now(UTC).isoformat(timespec="seconds"),
               "runs": [r.to_dict() for r in results],
               "videos": {k: [str(p.relative_to(out)) for p in v] for k, v in videos.items()}}
    paths["json"].write_text(json.dumps(payload, indent=2, default=_json_default))
    paths["markdown"].write_text(_markdown(results, command, videos))
    if logger is not None:
        _log(logger, results, paths, videos, step)
    for key, vs in videos.items():
        for i, v in enumerate(vs):
            paths[f"video:{key}:{i}"] = v
    return paths


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _log(logger: Any, results: Sequence[EvalResult], paths: dict[str, Path], videos: dict[str, list[Path]],
         step: int) -> None:
    import imageio.v3 as iio

    scalars = {}
    for r in results:
        for k, v in r.summary().items():
            if math.isfinite(v):
                scalars[f"eval/{r.task}/{r.operator}/{k}"] = v
    logger.log(scalars, step)
    logger.log_images({f"eval/{name}": iio.imread(paths[name]) for name in ("success", "interventions")}, step)
    run = getattr(logger, "run", None)
    if run is not None and videos:
        import wandb

        run.log({f"eval/video/{k}/{i}": wandb.Video(str(p), format=p.suffix[1:])
                 for k, vs in videos.items() for i, p in enumerate(vs)}, step=step)
