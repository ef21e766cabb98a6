"""The whole GPU benchmark in one command, for a bare GPU host with Python 3.12 and torch.

    python scripts/bench_gpu.py [--site DIR] [--demos 100] [--steps 3000] [--batch-size 64]
        [--preset tiny] [--eval-episodes 30] [--speed-presets tiny small] [--compile] [--out outputs/bench_gpu]

A host without network gets the other dependencies as wheels: on a machine with the project's
``.venv``, ``make gpu-wheels`` downloads them into ``dist/gpu-wheels``; copy that folder over and
install it with ``pip install --no-deps --no-index --target DIR dist/gpu-wheels/*.whl``, then pass
``--site DIR``. Stages, each timed (the whole run is sized to finish within 8 minutes on one H100):

0. preflight: CUDA, the imports, and headless MuJoCo rendering; each failure says how to fix it;
1. record ``--demos`` PickCube demos with the scripted expert, one worker per CPU core;
2. train the VLA on the GPU (bf16 autocast) for ``--steps`` steps;
3. evaluate it under the auto operator on held-out seeds, rollouts on CPU workers;
4. speed: training samples/s beside a transformers reference, batch-1 chunk latency (fp32 and bf16,
   eager and as one captured CUDA graph), via ``scripts/bench_speed.py``. ``--compile`` adds its
   torch.compile rows, whose compilation takes minutes and does not fit the 8-minute budget.

Ends with one table; every figure also goes to ``<out>/bench_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PREFLIGHT = """
import os, sys
import torch
if os.environ.get("BENCH_DEVICE", "cuda").startswith("cuda") and not torch.cuda.is_available():
    sys.exit("no CUDA device: torch " + torch.__version__ + " sees none (pass --device cpu to run on the CPU)")
missing = []
for mod in ("mujoco", "gymnasium", "hydra", "lerobot", "safetensors", "transformers"):
    try:
        __import__(mod)
    except ImportError as exc:
        missing.append(f"{mod} ({exc})")
if missing:
    sys.exit("missing packages: " + ", ".join(missing) + ". Install the wheels from `make gpu-wheels` with "
             "pip install --no-deps --no-index --target DIR dist/gpu-wheels/*.whl and pass --site DIR")
from envs.config import EnvConfig, make_env
try:
    env = make_env(EnvConfig(task="pick_cube", image_size=64))
    env.reset(seed=0)
    env.close()
except Exception as exc:
    sys.exit(f"headless MuJoCo rendering failed ({exc}); with MUJOCO_GL=egl the host needs libEGL and "
             "libOpenGL (Debian: apt install libegl1 libopengl0), or set MUJOCO_GL=osmesa with libosmesa6")
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"preflight ok: torch {torch.__version__}, device {name}")
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--site", type=Path, default=None, help="folder of installed wheels to put on the path")
    p.add_argument("--demos", type=int, default=100)
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--preset", default="tiny", choices=["tiny", "small"], help="backbone preset trained")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--eval-episodes", type=int, default=30)
    p.add_argument("--speed-presets", nargs="*", default=["tiny", "small"], choices=["tiny", "small"],
                   help="presets timed by bench_speed (none: skip the speed stage)")
    p.add_argument("--compile", action="store_true", help="also time bench_speed's torch.compile latency rows")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="CPU processes for demo recording and evaluation")
    p.add_argument("--device", default="cuda", help="cuda | cuda:<i> | cpu (cpu: a dry run of the pipeline)")
    p.add_argument("--out", type=Path, default=Path("outputs/bench_gpu"))
    a = p.parse_args(argv)
    for name in ("demos", "steps", "batch_size", "eval_episodes", "workers"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    return a


def stage_env(site: Path | None, device: str) -> dict[str, str]:
    path = [str(ROOT)] + ([str(site.resolve())] if site else []) + [os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p), "BENCH_DEVICE": device,
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}


def run_stage(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> float:
    """Run one stage; its output goes to ``<log_dir>/<name>.log`` and, on failure, to the terminal."""
    print(f"=== {name}: {' '.join(args)}", flush=True)
    log = log_dir / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"stage {name!r} failed (exit {proc.returncode}) after {seconds:.0f} s; log: {log}")
    print(f"    {name} done in {seconds:.1f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = stage_env(a.site, a.device)
    data, run_dir, eval_dir = out / "demos", out / "train", out / "eval"
    env_args = ["env=pick_cube", f"env.image_size={a.image_size}"]
    timings: dict[str, float] = {}
    start = time.perf_counter()

    timings["preflight"] = run_stage("preflight", ["-c", PREFLIGHT], env, out)
    timings["collect"] = run_stage("collect", [
        "scripts/collect.py", *env_args, f"root={data}", "repo_id=local/bench_gpu", f"episodes={a.demos}",
        f"workers={a.workers}", "noise.std=0.01", "noise.prob=0.3", f"hydra.run.dir={out / 'collect_run'}",
    ], env, out)
    resume = ["resume=true"] if (run_dir / "checkpoints").exists() else []  # a rerun continues, not restarts
    timings["train"] = run_stage("train", [
        "scripts/train.py", *env_args, f"data.root={data}", "data.repo_id=local/bench_gpu", f"model={a.preset}",
        "head=l1", f"train.steps={a.steps}", f"train.batch_size={a.batch_size}", "train.warmup_steps=100",
        f"train.save_every={a.steps}", "train.keep_last=1", "train.log_every=100", "logger=none",
        f"device={a.device}", f"hydra.run.dir={run_dir}", *resume,
    ], env, out)
    timings["evaluate"] = run_stage("evaluate", [
        "scripts/eval.py", f"checkpoint={run_dir}/checkpoints/last", *env_args, "gate=auto",
        f"episodes={a.eval_episodes}", f"workers={a.workers}", "video_episodes=1", "device=cpu",
        f"out_dir={eval_dir}", f"hydra.run.dir={out / 'eval_run'}",
    ], env, out)
    speed_json = out / "speed.json"
    if a.speed_presets:
        timings["speed"] = run_stage("speed", [
            "scripts/bench_speed.py", "--presets", *a.speed_presets, "--device", a.device, "--skip", "control",
            "--no-write", "--json", str(speed_json), *([] if a.compile else ["--no-compile"]),
        ], env, out)
    total = time.perf_counter() - start

    metrics = json.loads((eval_dir / "report.json").read_text())["runs"][0]["metrics"]
    train_log = (out / "train.log").read_text()
    samples_per_s = next((ln.split("│")[2].strip() for ln in train_log.splitlines()
                          if "samples/s" in ln and "│" in ln), "?")
    result = {
        "device": a.device, "demos": a.demos, "steps": a.steps, "batch_size": a.batch_size, "preset": a.preset,
        "seconds": {**timings, "total": total},
        "train_samples_per_s": samples_per_s,
        "success_rate": metrics["success_rate"], "success_ci95": metrics["success_ci95"],
        "eval_episodes": metrics["episodes"],
        "speed": json.loads(speed_json.read_text()) if speed_json.exists() else None,
    }
    (out / "bench_gpu.json").write_text(json.dumps(result, indent=2))

    sys.path.insert(0, str(ROOT))
    from vla.reporting import print_grid, print_table

    low, high = metrics["success_ci95"]
    print_table(f"GPU benchmark ({a.device}): {a.preset} VLA, {a.demos} PickCube demos, {a.steps} steps", {
        **{f"{k} (s)": f"{v:.1f}" for k, v in timings.items()},
        "total (s)": f"{total:.1f}",
        "training samples/s": samples_per_s,
        "PickCube success (auto)": f"{100 * metrics['success_rate']:.1f}% [{100 * low:.1f}, {100 * high:.1f}] "
                                   f"over {metrics['episodes']} episodes",
        "report": str(eval_dir / "report.md"),
    })
    for section in (result["speed"] or {}).get("sections", []):
        print_grid(section["title"], section["header"], section["rows"])
    return result


if __name__ == "__main__":
    main()
