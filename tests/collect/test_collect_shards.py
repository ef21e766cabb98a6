"""Sharded recording and dataset merging: the merged dataset holds exactly the scenes a one-writer recording
of the same seeds holds, lerobot reads it back, and bad merges are refused before anything is written."""

import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from envs.config import EnvConfig
from vla.data.collect import CollectConfig, collect
from vla.data.collect_shards import collect_in_shards, shard_configs
from vla.data.dataset import load_frames
from vla.data.merge import merge_datasets
from vla.data.recorder import existing_episodes

ENV = EnvConfig(task="pick_cube", image_size=16, cameras=["front"])


def _config(root: Path, **kw) -> CollectConfig:
    return CollectConfig(**{"env": ENV, "root": str(root), "repo_id": "local/test", "flush_every": 1, **kw})


def _first_states(root: Path) -> list[tuple[float, ...]]:
    store = load_frames(root)
    starts = store.episode_starts
    return sorted(tuple(np.round(store.state[int(i)].numpy(), 6)) for i in starts)


def test_shards_split_the_episodes_and_interleave_their_seeds(tmp_path):
    shards = shard_configs(_config(tmp_path / "d", episodes=5, seed=10, writers=3))
    assert [s.episodes for s in shards] == [2, 2, 1]
    assert [s.seed for s in shards] == [10, 11, 12]
    assert len({s.root for s in shards}) == 3 and all(s.writers == 1 and s.workers == 1 for s in shards)
    # More writers than episodes: no empty shard is started.
    assert len(shard_configs(_config(tmp_path / "d", episodes=2, writers=4))) == 2


def test_sharded_recording_holds_the_same_scenes_as_one_writer(tmp_path):
    sharded = tmp_path / "sharded"
    summary = collect_in_shards(_config(sharded, episodes=4, writers=2), progress=False)
    single = tmp_path / "single"
    collect(_config(single, episodes=4, workers=1), progress=False)

    assert summary.recorded == 4 and summary.total_episodes == 4 and existing_episodes(sharded) == 4
    assert not Path(f"{sharded}.shards").exists()  # the shards go once the merge has succeeded
    # Seeds 0..3 either way (the expert does not fail on them), so the same four scenes.
    assert _first_states(sharded) == _first_states(single)
    assert summary.frames == len(load_frames(sharded)) == len(load_frames(single))
    next_seed = json.loads((sharded / "meta" / "collect_state.json").read_text())["next_seed"]
    assert next_seed == 5  # shard 0 used seeds 0 and 2 (next 4), shard 1 seeds 1 and 3 (next 5)

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/test", root=sharded)
    assert ds.num_episodes == 4 and ds.num_frames == summary.frames
    assert ds[ds.num_frames - 1]["observation.images.front"].shape == (3, 16, 16)

    # Asking again for what is there records nothing; asking for more is refused with the way out.
    assert collect_in_shards(_config(sharded, episodes=4, writers=2), progress=False).recorded == 0
    with pytest.raises(ValueError, match="Extend this one with writers=1"):
        collect_in_shards(_config(sharded, episodes=6, writers=2), progress=False)


def test_a_killed_sharded_recording_resumes_without_repeating_a_scene(tmp_path):
    cfg = _config(tmp_path / "d", episodes=4, writers=2)
    first, _ = shard_configs(cfg)
    # As if killed after shard 0 had recorded one of its two episodes.
    from vla.data.collect_shards import _check_plan

    _check_plan(cfg)
    collect(replace(first, episodes=1), progress=False, seed_stride=2)
    summary = collect_in_shards(cfg, progress=False)
    assert summary.recorded == 3 and existing_episodes(tmp_path / "d") == 4
    single = tmp_path / "single"
    collect(_config(single, episodes=4, workers=1), progress=False)
    assert _first_states(tmp_path / "d") == _first_states(single)


def test_resuming_under_another_plan_is_refused(tmp_path):
    from vla.data.collect_shards import _check_plan, shards_dir

    _check_plan(_config(tmp_path / "d", episodes=4, writers=2))
    with pytest.raises(ValueError, match=r"started with .*'writers': 2.*delete .*d\.shards to start over"):
        collect_in_shards(_config(tmp_path / "d", episodes=4, writers=3), progress=False)
    assert shards_dir(f"{tmp_path / 'd'}/") == tmp_path / "d.shards"  # a trailing slash keeps them beside it


def test_a_destination_that_exists_without_a_dataset_is_refused_before_recording(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FileExistsError, match="exists but holds no finished dataset"):
        collect_in_shards(_config(tmp_path / "d", episodes=2, writers=2), progress=False)
    assert not (tmp_path / "d.shards").exists()  # nothing was recorded


def test_a_failed_merge_leaves_no_half_built_dataset(tmp_path, monkeypatch):
    a = tmp_path / "a"
    collect(_config(a, episodes=1, workers=1), progress=False)
    import lerobot.datasets.aggregate as aggregate

    def fail_midway(*args, aggr_root, **kwargs):
        (aggr_root / "data").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(aggregate, "aggregate_datasets", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        merge_datasets([a], tmp_path / "merged", "local/test")
    assert not (tmp_path / "merged").exists() and not (tmp_path / "merged.merging").exists()


def test_merge_refuses_a_source_of_another_layout_and_an_existing_destination(tmp_path):
    a = tmp_path / "a"
    collect(_config(a, episodes=1, workers=1), progress=False)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    info = json.loads((b / "meta" / "info.json").read_text())
    info["features"]["observation.images.front"]["shape"] = [3, 32, 32]
    (b / "meta" / "info.json").write_text(json.dumps(info))

    with pytest.raises(ValueError, match=f"cannot merge {b}.*features differ"):
        merge_datasets([a, b], tmp_path / "merged", "local/test")
    assert not (tmp_path / "merged").exists()
    with pytest.raises(FileExistsError, match="merge into a new root"):
        merge_datasets([a], b, "local/test")
    with pytest.raises(FileNotFoundError, match="not a LeRobotDataset"):
        merge_datasets([a, tmp_path / "missing"], tmp_path / "merged", "local/test")


def test_merge_script_concatenates_datasets(tmp_path, capsys):
    a = tmp_path / "a"
    collect(_config(a, episodes=1, workers=1), progress=False)
    b = tmp_path / "b"
    collect(_config(b, episodes=1, workers=1, seed=5), progress=False)
    script = Path(__file__).resolve().parents[2] / "scripts" / "merge_datasets.py"
    spec = importlib.util.spec_from_file_location("merge_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(a), str(b), "--out", str(tmp_path / "m"), "--repo-id", "local/test"]) == 2
    assert len(load_frames(tmp_path / "m")) == len(load_frames(a)) + len(load_frames(b))
    with pytest.raises(SystemExit):  # an existing destination: a usage error naming it, nothing changed
        module.main([str(a), "--out", str(b)])
    assert "merge into a new root" in capsys.readouterr().err


def test_progress_survives_a_metadata_file_caught_mid_rewrite(tmp_path):
    # LeRobot rewrites info.json in place (truncate, then write): a poll between the two reads an empty file.
    # A sharded recording on an H200 host's 15 writers died of exactly this JSONDecodeError in its progress bar.
    from vla.data.collect_shards import _recorded_so_far

    shards = shard_configs(_config(tmp_path / "d", episodes=4, writers=2))
    meta = Path(shards[0].root) / "meta"
    meta.mkdir(parents=True)
    (meta / "info.json").write_text("")
    with pytest.raises(ValueError):
        existing_episodes(Path(shards[0].root))
    assert _recorded_so_far(shards, last=3) == 3
    (meta / "info.json").write_text(json.dumps({"total_episodes": 2}))
    assert _recorded_so_far(shards, last=3) == 2


def test_writers_must_be_positive():
    with pytest.raises(ValueError, match="writers must be >= 1"):
        CollectConfig(writers=0)
