"""The Hydra app: the debug preset trains end to end, resumes, and typed schemas reject bad overrides."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from vla.config import register_configs, to_app_config
from vla.train import last_checkpoint, load_policy
from vla.train.checkpoint import load_train_state
from vla.train.loop import run_training

REPO = Path(__file__).resolve().parents[2]
SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.stem_channels=[8]", "model.d_vision=32",
         "model.vision_layers=1", "model.vision_heads=2", "head.n_layers=1", "head.n_heads=2"]


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_debug_preset_trains_two_steps_and_resumes(demo_root, store, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), f"data.root={demo_root}", "model=tiny", "head=l1",
           "train=debug", f"hydra.run.dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "HF_HUB_OFFLINE")}  # the script sets them
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final loss" in proc.stdout and "checkpoint" in proc.stdout
    ckpt = last_checkpoint(run_dir)
    assert ckpt is not None and ckpt.name == "00000002"
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb should log offline inside the run folder"
    saved = OmegaConf.load(ckpt / "config.yaml")
    assert saved.data.root == str(demo_root) and saved.train.steps == 2 and saved.model.d_model == 128
    policy = load_policy(ckpt, spec=store.spec)
    assert policy.cfg.backbone.d_model == 128 and policy.cfg.head.kind == "l1"

    # Continue the same run folder for one more step, through the compose API this time.
    cfg = _compose([f"data.root={demo_root}", "train=debug", "train.steps=3", "logger=none", "resume=true"])
    result = run_training(to_app_config(cfg), run_dir, OmegaConf.to_yaml(cfg, resolve=True))
    assert result.steps == 3 and last_checkpoint(run_dir).name == "00000003"
    assert load_train_state(run_dir)["sampler"]["batches_seen"] == 3

    # A fine-tune from that checkpoint keeps its vocabulary and normalisation stats.
    cfg = _compose([f"data.root={demo_root}", "train=debug", "train.steps=1", "logger=none",
                    f"train.init_from={ckpt}", "data.episodes=[0,1]"])
    tuned = run_training(to_app_config(cfg), tmp_path / "tuned", OmegaConf.to_yaml(cfg, resolve=True)).checkpoint
    assert (tuned / "stats.json").read_text() == (ckpt / "stats.json").read_text()
    assert load_policy(tuned).vocab == policy.vocab


def test_data_root_follows_the_env_and_presets_validate():
    cfg = _compose(["env=stack"])
    assert cfg.data.root == "data/stack" and cfg.data.repo_id == "local/stack"
    for overrides in (["model=small", "head=flow"], ["model=tiny", "head=l1", *SMALL]):
        app = to_app_config(_compose(["data.root=x", *overrides]))
        assert app.policy_config().head.kind == overrides[1].split("=")[1]
    with pytest.raises(ValueError, match=r"set model\.path to a local folder"):
        to_app_config(_compose(["data.root=x", "model=hf"]))


@pytest.mark.parametrize(
    ("override", "pattern"),
    [("train.steps=abc", r"train\.steps"), ("train.lr=fast", r"train\.lr"), ("model.d_model=wide", r"model\.d_model"),
     ("train.stepz=3", r"stepz")],
)
def test_wrong_type_or_unknown_override_is_named(override, pattern):
    with pytest.raises(ConfigCompositionException) as err:
        _compose([override])
    text = f"{err.value} {err.value.__cause__}"  # what Hydra prints: the error and its cause
    assert re.search(pattern, text), text


def test_bad_values_fail_at_start_with_the_fix():
    with pytest.raises(ValueError, match=r"train\.batch_size must be >= 1"):
        to_app_config(_compose(["data.root=x", "train.batch_size=0"]))
    with pytest.raises(ValueError, match=r"logger\.kind='tensorboard'"):
        to_app_config(_compose(["data.root=x", "logger.kind=tensorboard"]))
    with pytest.raises(ValueError, match=r"data\.val_fraction"):
        to_app_config(_compose(["data.root=x", "data.val_fraction=1.5"]))


def test_keyframe_goal_loss_trains_from_the_dataset(demo_root, tmp_path):
    cfg = _compose([f"data.root={demo_root}", "train=debug", "logger=none", "head.goal_loss_weight=1.0",
                    "data.val_fraction=0.3", *SMALL])
    result = run_training(to_app_config(cfg), tmp_path / "run", OmegaConf.to_yaml(cfg, resolve=True))
    assert result.steps == 2 and result.metrics["val/goal_l1"] > 0
    assert load_policy(result.checkpoint).goal_head is not None
