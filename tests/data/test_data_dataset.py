"""LeRobotDataset -> FrameStore -> chunk batches: values, padding, tasks, splits, sampling, errors."""

from __future__ import annotations

import pytest
import torch
from data_helpers import ACTION_NAMES, CAMERAS, LENGTHS, STATE_NAMES, TASKS

from vla.data import (
    ChunkBatchSampler,
    ChunkDataset,
    feature_spec,
    images_to_float,
    load_frames,
    make_loader,
    split_episodes,
)


def test_store_holds_every_frame_in_episode_order(store):
    spec = store.spec
    assert spec.cameras == CAMERAS and spec.image_shape == (3, 32, 32)
    assert (spec.state_dim, spec.action_dim, spec.gripper_dims, spec.fps) == (4, 3, (2,), 10)
    assert spec.state_names == STATE_NAMES and spec.action_names == ACTION_NAMES
    assert len(store) == sum(LENGTHS) and store.episode_ids == list(range(len(LENGTHS)))
    assert sorted(store.tasks) == sorted(TASKS)
    start = 0
    for ep, n in enumerate(LENGTHS):
        rows = slice(start, start + n)
        assert torch.equal(store.state[rows, 0], 100.0 * ep + torch.arange(n, dtype=torch.float32))
        assert torch.equal(store.action[rows, 1], torch.arange(n, dtype=torch.float32))
        assert (store.episode_end[rows] == start + n).all()
        assert {store.tasks[i] for i in store.task_index[rows].tolist()} == {TASKS[ep % 2]}
        wrist = store.images["observation.images.wrist"][rows]
        assert wrist.dtype == torch.uint8 and wrist.shape == (n, 3, 32, 32)
        assert torch.equal(wrist[:, 0, 0, 0], (torch.arange(n) * 10 + 1).to(torch.uint8))
        start += n


def test_chunks_stay_inside_their_episode_and_pad_with_the_last_action(store):
    chunk = 5
    data = ChunkDataset(store, chunk)
    first_of_ep1, last_of_ep0 = LENGTHS[0], LENGTHS[0] - 1
    batch = data.__getitems__([0, last_of_ep0 - 2, last_of_ep0, first_of_ep1])
    frame = batch["action"][..., 1]  # the frame index each chunk step points at
    assert torch.equal(frame[0], torch.arange(5.0))
    assert torch.equal(frame[1], torch.tensor([9.0, 10, 11, 11, 11]))
    assert torch.equal(batch["action_is_pad"][1], torch.tensor([False, False, False, True, True]))
    assert torch.equal(frame[2], torch.full((5,), 11.0)) and batch["action_is_pad"][2, 1:].all()
    assert torch.equal(batch["action"][:, :, 0], torch.tensor([0.0, 0, 0, 1])[:, None].expand(4, 5))
    assert not batch["action_is_pad"][3].any()
    assert batch["task"] == [TASKS[0], TASKS[0], TASKS[0], TASKS[1]]
    for cam in CAMERAS:
        img = batch[f"observation.images.{cam}"]
        assert img.dtype == torch.float32 and img.shape == (4, 3, 32, 32)
        assert img.min() >= 0.0 and img.max() <= 1.0
    assert torch.allclose(batch["observation.images.front"][1, 0, 0, 0], torch.tensor(90 / 255))
    assert batch["observation.state"].shape == (4, 4)
    one = data[0]
    assert one["action"].shape == (5, 3) and one["task"] == TASKS[0]
    raw = ChunkDataset(store, chunk, uint8_images=True).__getitems__([0, last_of_ep0 - 2, last_of_ep0, first_of_ep1])
    assert raw["observation.images.front"].dtype == torch.uint8
    converted = images_to_float(raw)
    assert all(torch.equal(converted[k], batch[k]) for k in batch if k != "task")


def test_episode_subset_and_split(store):
    train, val = split_episodes(store.episode_ids, 0.25, seed=3)
    assert len(val) == 1 and sorted(train + val) == store.episode_ids
    assert split_episodes(store.episode_ids, 0.25, seed=3) == (train, val)
    data = ChunkDataset(store, 3, val)
    assert len(data) == LENGTHS[val[0]]
    assert (data.__getitems__(list(range(len(data))))["action"][:, 0, 0] == val[0]).all()
    assert split_episodes([0, 1], 0.0, seed=0) == ([0, 1], [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes([0, 1], 1.0, seed=0)
    with pytest.raises(ValueError, match=">= 2 episodes"):
        split_episodes([0], 0.5, seed=0)


def test_sampler_is_resumable_and_shards_ranks():
    full = ChunkBatchSampler(40, 4, seed=7)
    it = iter(full)
    first = [next(it) for _ in range(25)]  # crosses two epoch boundaries (10 batches per epoch)
    assert sorted(i for b in first[:10] for i in b) == list(range(40))
    assert first[:10] != first[10:20]  # a new permutation each epoch
    resumed = iter(ChunkBatchSampler(40, 4, seed=7, start_batch=13))
    assert [next(resumed) for _ in range(12)] == first[13:]
    r0, r1 = ChunkBatchSampler(41, 4, 7, rank=0, world_size=2), ChunkBatchSampler(41, 4, 7, rank=1, world_size=2)
    assert len(r0) == len(r1) == 5
    seen0 = {i for b, _ in zip(r0, range(5), strict=False) for i in b}
    seen1 = {i for b, _ in zip(r1, range(5), strict=False) for i in b}
    assert not seen0 & seen1 and len(seen0) == len(seen1) == 20
    with pytest.raises(ValueError, match=r"train\.batch_size"):
        ChunkBatchSampler(6, 4, seed=0, world_size=2)


def test_loader_workers_give_the_same_batches(store):
    data = ChunkDataset(store, 4)
    batches = []
    for workers in (0, 1):
        loader = make_loader(data, ChunkBatchSampler(len(data), 8, seed=1), num_workers=workers)
        it = iter(loader)
        batches.append([next(it) for _ in range(3)])
    for a, b in zip(*batches, strict=True):
        assert a["task"] == b["task"]
        assert all(torch.equal(a[k], b[k]) for k in a if k != "task")


def test_missing_root_says_how_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*scripts/collect\.py"):
        load_frames(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"not a LeRobotDataset.*scripts/collect\.py"):
        load_frames(tmp_path / "empty")


def test_missing_feature_is_named_with_the_features_found():
    features = {
        "observation.images.front": {"dtype": "image", "shape": (8, 8, 3)},
        "observation.state": {"dtype": "float32", "shape": (4,)},
        "timestamp": {"dtype": "float32", "shape": (1,)},
    }
    with pytest.raises(ValueError, match=r"lacks required feature\(s\) \['action'\].*observation.state"):
        feature_spec(features, fps=10)
    no_camera = {k: v for k, v in features.items() if "images" not in k}
    with pytest.raises(ValueError, match=r"observation.images.<camera>"):
        feature_spec(no_camera | {"action": {"dtype": "float32", "shape": (2,)}}, fps=10)
    video = features | {"action": {"dtype": "float32", "shape": (2,)}}
    video["observation.images.front"] = {"dtype": "video", "shape": (8, 8, 3)}
    with pytest.raises(ValueError, match="use_videos=False"):
        feature_spec(video, fps=10)
