"""``scripts/eval.py`` on a freshly saved (untrained) checkpoint: loaded from its path, the report is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from envs.config import EnvConfig, make_env
from vla.eval.rollout import env_feature_spec

ROOT = Path(__file__).resolve().parents[2]


def _checkpoint(tmp_path: Path) -> Path:
    from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
    from vla.policy import VLAPolicy
    from vla.tokenizer import build_vocab
    from vla.train.checkpoint import save_checkpoint

    env = make_env(EnvConfig(task="pick_place", image_size=16))
    spec = env_feature_spec(env)
    env.close()
    cfg = PolicyConfig(backbone=BackboneConfig(d_model=16, n_layers=1, n_heads=2, stem_channels=[4], patch_size=2,
                                               patch_stride=2, d_vision=16, vision_layers=1, vision_heads=2),
                       head=HeadConfig(chunk_size=4, n_action_steps=2, n_layers=1, n_heads=2))
    stats = {k: {"mean": torch.zeros(7), "std": torch.full((7,), 0.1), "min": -torch.ones(7), "max": torch.ones(7)}
             for k in ("observation.state", "action")}
    torch.manual_seed(0)
    policy = VLAPolicy(cfg, spec, build_vocab(["put the red cube on the blue pad"]), stats)
    return save_checkpoint(tmp_path / "run", 0, policy, config_yaml="{}", stats=stats)


def test_eval_script_on_a_checkpoint(tmp_path):
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "report"
    cmd = [sys.executable, str(ROOT / "scripts" / "eval.py"), f"checkpoint={ckpt}", "env=pick_place",
           "env.image_size=16", "env.max_steps=6", "gate=simulated", "episodes=2", "workers=1", "video_episodes=1",
           "also_auto=true", "device=cpu", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "success [95% CI]" in proc.stdout and "pick_place / simulated" in proc.stdout
    data = json.loads((out / "report.json").read_text())
    assert [r["operator"] for r in data["runs"]] == ["simulated", "auto"]
    assert all(len(r["episodes"]) == 2 and all(e["steps"] <= 6 for e in r["episodes"]) for r in data["runs"])
    assert data["command"].startswith("python ") and f"checkpoint={ckpt}" in data["command"]
    assert (out / "report.md").is_file() and (out / "success.png").is_file()
    assert sorted(p.name for p in (out / "videos").iterdir()) == [
        "pick_place_auto_seed100000.mp4", "pick_place_simulated_seed100000.mp4"]


def test_eval_script_refuses_a_wrong_type(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "eval.py"), "checkpoint=x", "episodes=lots",
           f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "episodes" in proc.stderr


def test_bench_language_script_on_a_checkpoint(tmp_path):
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "language"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_language.py"), "--checkpoint", str(ckpt), "--image-size",
           "16", "--episodes", "1", "--swaps", "none", "both", "--workers", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "grounding.json").read_text())
    assert [s["swap"] for s in data["summary"]] == ["none", "both"]
    (plain, swapped) = data["episodes"]
    assert plain["seed"] == swapped["seed"] == 100_000 and plain["original"] == swapped["original"]
    assert swapped["named"] != swapped["original"] and plain["named"] == plain["original"]
    assert "lifted originally named cube" in (out / "grounding.md").read_text()


def test_bench_language_script_names_an_impossible_swap(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_language.py"), "--checkpoint", str(tmp_path),
           "--task", "pick_cube", "--swaps", "object"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "distractors >= 1" in proc.stderr
