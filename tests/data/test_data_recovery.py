"""A dataset left by a killed recording run is put back to its last commit and stays readable.

The crash artefacts are the ones lerobot leaves when killed between finalisations: info.json and
stats.json counting an episode whose metadata was never written, half-written parquet files
(no footer) for episode metadata, data and tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import ACTION_NAMES, CAMERAS, STATE_NAMES, episode_frames, write_demos

from vla.data.commit import COMMIT_PATH
from vla.data.recorder import DatasetRecorder, dataset_features, existing_episodes

READ_BACK = """
import json, sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/test", root=sys.argv[1])
last = ds[len(ds) - 1]
print(json.dumps({"episodes": ds.num_episodes, "frames": ds.num_frames,
                  "last_state": last["observation.state"].tolist(), "last_task": last["task"]}))
"""


def _read_back(root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", READ_BACK, str(root)], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _half_write(path: Path, like: Path) -> None:
    """A parquet file cut off before its footer, as a kill mid-write leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = like.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _crash_after_commit(root: Path) -> None:
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["total_episodes"] += 1
    info["total_frames"] += 11
    info_path.write_text(json.dumps(info))
    (root / "meta" / "stats.json").write_text('{"action": {"min": [0.0,')
    meta_files = sorted((root / "meta" / "episodes").glob("**/*.parquet"))
    data_files = sorted((root / "data").glob("**/*.parquet"))
    _half_write(root / "meta" / "episodes" / "chunk-000" / "file-099.parquet", meta_files[-1])
    _half_write(root / "data" / "chunk-000" / "file-099.parquet", data_files[-1])
    _half_write(root / "meta" / "tasks.parquet", root / "meta" / "tasks.parquet")


def test_a_crashed_run_is_rolled_back_to_its_last_commit_and_appending_continues(tmp_path):
    root = write_demos(tmp_path / "demos", lengths=[12, 7, 15, 9], image_size=16, flush_every=2)
    assert (root / COMMIT_PATH).is_file() and existing_episodes(root) == 4
    _crash_after_commit(root)
    assert existing_episodes(root) == 4  # the commit, not lerobot's info.json, says what is finalised

    features = dataset_features(CAMERAS, 16, STATE_NAMES, ACTION_NAMES)
    with DatasetRecorder(root, "local/test", 10, features, "arm6", flush_every=1) as rec:
        assert rec.num_episodes == 4
        rec.add_episode(episode_frames(4, 6, 16), "a new instruction")

    moved = sorted(p.name for p in (root / "orphaned").glob("**/*.parquet"))
    assert moved == ["file-099.parquet", "file-099.parquet"]  # the half-written episode metadata and data
    got = _read_back(root)
    assert got["episodes"] == 5 and got["frames"] == 12 + 7 + 15 + 9 + 6
    assert got["last_state"][0] == pytest.approx(100.0 * 4 + 5) and got["last_task"] == "a new instruction"


def test_a_run_killed_before_its_first_flush_is_set_aside_not_deleted(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path / "demos"
    features = dataset_features(CAMERAS, 16, STATE_NAMES, ACTION_NAMES)
    LeRobotDataset.create("local/test", fps=10, features=features, root=root, robot_type="arm6")
    assert existing_episodes(root) == 0
    with DatasetRecorder(root, "local/test", 10, features, "arm6") as rec:
        rec.add_episode(episode_frames(0, 5, 16), "pick")
    assert (tmp_path / "demos.interrupted-0" / "meta" / "info.json").is_file()
    assert _read_back(root)["episodes"] == 1


def test_a_foreign_dataset_with_a_broken_episode_index_gets_a_clear_error(tmp_path):
    root = write_demos(tmp_path / "demos", lengths=[5, 6], image_size=16, flush_every=1)
    (root / COMMIT_PATH).unlink()  # as if written by another tool: nothing to roll back to
    meta_file = sorted((root / "meta" / "episodes").glob("**/*.parquet"))[0]
    _half_write(meta_file, meta_file)
    features = dataset_features(CAMERAS, 16, STATE_NAMES, ACTION_NAMES)
    with pytest.raises(RuntimeError, match=r"unreadable.*record into a new root"):
        DatasetRecorder(root, "local/test", 10, features, "arm6")
