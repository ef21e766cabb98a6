"""Hindsight keyframes: the grasp and release frames read off each episode's gripper command."""

from __future__ import annotations

import pytest
import torch

from vla.data import ChunkDataset, FrameStore
from vla.data.keyframes import gripper_keyframes
from vla.types import FeatureSpec

SPEC = FeatureSpec(cameras=("front",), image_shape=(3, 4, 4), state_dim=2, action_dim=2, gripper_dims=(1,),
                   state_names=("j0", "gripper"), action_names=("j0.target", "gripper"))
# Four episodes: grasp + release; grasp only (a pick); never closes; starts closed (first change opens).
GRIPPER = [[0, 0, 1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0], [1, 1, 0, 1, 1]]


def _store() -> FrameStore:
    lengths = [len(g) for g in GRIPPER]
    n = sum(lengths)
    episode = torch.cat([torch.full((k,), i) for i, k in enumerate(lengths)])
    gripper = torch.tensor([g for episode in GRIPPER for g in episode], dtype=torch.float32)
    action = torch.stack([torch.arange(n, dtype=torch.float32), gripper], 1)
    state = torch.stack([100.0 + torch.arange(n, dtype=torch.float32), torch.zeros(n)], 1)
    return FrameStore(spec=SPEC, images={"observation.images.front": torch.zeros(n, 3, 4, 4, dtype=torch.uint8)},
                      state=state, action=action, episode_index=episode, task_index=torch.zeros(n, dtype=torch.long),
                      tasks=["pick up the red cube"])


def test_grasp_and_release_of_each_episode():
    store = _store()
    frames, valid = gripper_keyframes(store.action, store.episode_end, gripper_dim=1)
    # Episode starts: 0, 6, 10, 13.
    expected_frames = [(2, 4)] * 6 + [(8, 0)] * 4 + [(0, 0)] * 3 + [(15, 16)] * 5
    expected_valid = [(True, True)] * 6 + [(True, False)] * 4 + [(False, False)] * 3 + [(True, True)] * 5
    assert frames.tolist() == [list(f) for f in expected_frames]
    assert valid.tolist() == [list(v) for v in expected_valid]


def test_chunk_batches_carry_the_keyframe_states():
    store = _store()
    data = ChunkDataset(store, chunk_size=2, keyframe_goals=True)
    batch = data.__getitems__([0, 5, 7, 11])
    # State j0 is 100 + frame index, so the goal names the keyframe frames directly.
    assert batch["goal_state"][..., 0].tolist() == [[102, 104], [102, 104], [108, 100], [100, 100]]
    assert batch["goal_is_pad"].tolist() == [[False, False], [False, False], [False, True], [True, True]]
    assert "goal_state" not in ChunkDataset(store, chunk_size=2).__getitems__([0])


def test_goals_can_count_only_on_frames_before_their_keyframe():
    store = _store()
    data = ChunkDataset(store, chunk_size=2, keyframe_goals=True, goal_frames="before")
    # Episode 0 grasps at frame 2 and releases at 4: frame 1 is before both, 3 between, 4 and 5 after both.
    batch = data.__getitems__([1, 3, 4, 5, 7, 11])
    assert batch["goal_is_pad"].tolist() == [[False, False], [True, False], [True, True], [True, True],
                                             [False, True], [True, True]]
    # The targets themselves do not change, only where they count.
    assert batch["goal_state"][..., 0].tolist() == [[102, 104]] * 4 + [[108, 100], [100, 100]]
    with pytest.raises(ValueError, match="goal_frames"):
        ChunkDataset(store, chunk_size=2, keyframe_goals=True, goal_frames="after")


def test_keyframes_need_a_gripper_dim():
    store = _store()
    store.spec = FeatureSpec(cameras=("front",), image_shape=(3, 4, 4), state_dim=2, action_dim=2)
    with pytest.raises(ValueError, match="goal_loss_weight=0"):
        ChunkDataset(store, chunk_size=2, keyframe_goals=True)
