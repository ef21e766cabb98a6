"""Demo collection: lerobot reads the dataset back in a fresh process; resume and interruption keep episodes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from envs.config import EnvConfig
from vla.data.collect import CollectConfig, NoiseConfig, collect, run_expert_episode
from vla.data.recorder import existing_episodes

ENV = EnvConfig(task="pick_cube", image_size=32)

READ_BACK = """
import json, sys
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/test", root=sys.argv[1])
first = ds[0]
out = {"episodes": ds.num_episodes, "frames": ds.num_frames, "fps": ds.fps, "features": sorted(ds.features),
       "task": first["task"], "state0": first["observation.state"].tolist(), "action0": first["action"].tolist(),
       "front0": (first["observation.images.front"].numpy() * 255).round().astype(np.uint8).tolist()}
print(json.dumps(out))
"""


def _read_in_fresh_process(root: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", READ_BACK, str(root)], capture_output=True, text=True, env=env,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lerobot_reads_back_what_the_env_produced(tmp_path):
    root = tmp_path / "demos"
    cfg = CollectConfig(env=ENV, root=str(root), repo_id="local/test", episodes=2, workers=1, flush_every=1)
    summary = collect(cfg, progress=False)
    assert summary.recorded == 2 and summary.total_episodes == 2 and summary.attempts >= 2
    got = _read_in_fresh_process(root)
    assert got["episodes"] == 2 and got["fps"] == 10 and got["frames"] == summary.frames
    for key in ("observation.images.front", "observation.images.wrist", "observation.state", "action"):
        assert key in got["features"]
    # The first frame is exactly what the env and the expert produced for seed 0.
    episode = run_expert_episode(ENV, 0, NoiseConfig())
    first = episode.frames[0]
    assert got["task"] == episode.task
    np.testing.assert_allclose(got["state0"], first["observation.state"], atol=1e-6)
    np.testing.assert_allclose(got["action0"], first["action"], atol=1e-6)
    front = np.asarray(got["front0"], dtype=np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(front, first["observation.images.front"])  # PNG is lossless


def test_extending_a_dataset_continues_with_new_seeds(tmp_path):
    root = tmp_path / "demos"
    base = dict(env=EnvConfig(task="pick_cube", image_size=16, cameras=["front"]), root=str(root),
                repo_id="local/test", workers=1, flush_every=1)
    collect(CollectConfig(**base, episodes=1), progress=False)
    first_seed_state = json.loads((root / "meta" / "collect_state.json").read_text())["next_seed"]
    s = collect(CollectConfig(**base, episodes=2), progress=False)
    assert s.recorded == 1 and existing_episodes(root) == 2
    assert json.loads((root / "meta" / "collect_state.json").read_text())["next_seed"] > first_seed_state
    assert collect(CollectConfig(**base, episodes=2), progress=False).recorded == 0  # already complete


def test_a_killed_run_keeps_every_flushed_episode(tmp_path):
    root = tmp_path / "demos"
    script = Path(__file__).resolve().parents[2] / "scripts" / "collect.py"
    cmd = [sys.executable, str(script), f"root={root}", "repo_id=local/test", "env.image_size=16",
           "env.cameras=[front]", "episodes=50", "workers=1", "flush_every=1", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while existing_episodes(root) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if existing_episodes(root) < 2:
        pytest.fail("the collector finalised fewer than 2 episodes within 240 s")
    # Reopening for append quarantines any half-written data file; lerobot reads every finished episode.
    kept = existing_episodes(root)
    s = collect(CollectConfig(env=EnvConfig(task="pick_cube", image_size=16, cameras=["front"]), root=str(root),
                              repo_id="local/test", episodes=kept + 1, workers=1, flush_every=1), progress=False)
    assert s.total_episodes == kept + 1
    code = ("import sys; from lerobot.datasets.lerobot_dataset import LeRobotDataset; "
            "ds = LeRobotDataset('local/test', root=sys.argv[1]); ds[len(ds) - 1]; print(ds.num_episodes)")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert int(out.stdout.strip().splitlines()[-1]) == kept + 1
