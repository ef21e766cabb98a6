"""Image-space keyframe targets: the hand at the grasp and release, projected into each frame's cameras."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.config import EnvConfig, make_env
from envs.tasks.language import COLOURS
from vla.data import ChunkDataset, FrameStore
from vla.data.collect import NoiseConfig, run_expert_episode
from vla.data.keyframes import gripper_keyframes, keyframe_pixels
from vla.eval.rollout import env_feature_spec
from vla.types import GOAL_PIXELS_KEY

ENV = EnvConfig(task="pick_place", image_size=64)
SEEDS = (100_000, 100_001)


@pytest.fixture(scope="module")
def demos() -> tuple[FrameStore, list[str]]:
    episodes = [run_expert_episode(ENV, seed, NoiseConfig()) for seed in SEEDS]
    assert all(e.success for e in episodes)
    env = make_env(ENV)
    spec = env_feature_spec(env)
    env.close()
    frames = [f for e in episodes for f in e.frames]
    store = FrameStore(
        spec=spec,
        images={k: torch.from_numpy(np.stack([f[k] for f in frames])).permute(0, 3, 1, 2).contiguous()
                for k in spec.image_keys()},
        state=torch.from_numpy(np.stack([f["observation.state"] for f in frames])),
        action=torch.from_numpy(np.stack([f["action"] for f in frames])),
        episode_index=torch.cat([torch.full((len(e.frames),), i) for i, e in enumerate(episodes)]),
        task_index=torch.cat([torch.full((len(e.frames),), i) for i, e in enumerate(episodes)]),
        tasks=[e.task for e in episodes],
    )
    return store, [e.task for e in episodes]


def _targets(store: FrameStore) -> tuple[torch.Tensor, torch.Tensor]:
    keyframes = gripper_keyframes(store.action, store.episode_end, store.spec.gripper_dims[0])
    env = make_env(ENV)
    try:
        return keyframe_pixels(env.unwrapped, store.state, keyframes, store.spec.cameras)
    finally:
        env.close()


def _colour_at(image: np.ndarray, xy: torch.Tensor) -> str:
    # Divide by the brightest channel: lighting scales a surface's colour, the hue stays.
    seen = image[int(xy[1]), int(xy[0])].astype(float)
    seen /= max(seen.max(), 1e-6)
    palette = {name: np.array(c[:3]) / max(c[:3]) for name, c in COLOURS.items()}
    return min(palette, key=lambda name: np.linalg.norm(palette[name] - seen))


def test_first_frame_targets_land_on_the_named_cube_and_pad(demos) -> None:
    store, tasks = demos
    pixels, seen = _targets(store)
    assert pixels.shape == (len(store), 2, 2, 2) and seen.shape == (len(store), 2, 2)
    front = store.spec.cameras.index("front")
    for episode, start in enumerate(store.episode_starts.tolist()):
        obj, target = [w for w in tasks[episode].split() if w in COLOURS]
        image = store.images["observation.images.front"][start].permute(1, 2, 0).numpy()
        assert seen[start, front].all(), "the front camera sees where the hand grasps and releases"
        assert _colour_at(image, pixels[start, front, 0]) == obj
        assert _colour_at(image, pixels[start, front, 1]) == target


def test_a_fixed_camera_keeps_its_targets_while_the_wrist_camera_follows_the_arm(demos) -> None:
    store, _ = demos
    pixels, _ = _targets(store)
    first, last = store.episode_starts[0], store.episode_end[0] - 1
    front, wrist = store.spec.cameras.index("front"), store.spec.cameras.index("wrist")
    torch.testing.assert_close(pixels[first, front], pixels[last - 5, front])
    assert (pixels[first, wrist] - pixels[last - 5, wrist]).abs().max() > 1.0


def test_dataset_pads_targets_from_the_keyframe_on_and_checks_shapes(demos) -> None:
    store, _ = demos
    targets = _targets(store)
    data = ChunkDataset(store, 4, keyframe_goals=True, goal_frames="before", keyframe_pixels=targets)
    batch = data.__getitems__(list(range(len(data))))
    assert batch[GOAL_PIXELS_KEY].shape == (len(store), 2, 2, 2)
    # The grasp target counts before the grasp, never after it; the same holds in every camera.
    grasp = data.keyframes[0][:, 0]
    after_grasp = torch.arange(len(store)) >= grasp
    assert batch["goal_pixels_is_pad"][after_grasp, :, 0].all()
    assert not batch["goal_pixels_is_pad"][store.episode_starts, 0, 0].any()
    with pytest.raises(ValueError, match="keyframe_goals=True"):
        ChunkDataset(store, 4, keyframe_pixels=targets)
    with pytest.raises(ValueError, match="every frame of the store"):
        ChunkDataset(store, 4, keyframe_goals=True, keyframe_pixels=(targets[0][:5], targets[1][:5]))


def test_dagger_batches_carry_the_demos_targets_and_none_for_operator_frames(demos) -> None:
    from vla.supervision.dagger import dagger_dataset

    store, _ = demos
    flags = {e: np.arange(int((store.episode_index == e).sum())) < 5 for e in range(2)}  # operator drove 5 ticks
    data = dagger_dataset(store, store, flags, 4, 1.0, keyframe_goals=True, goal_frames="before", grounding_env=ENV)
    n = data.demo_frames
    batch = data.dataset.__getitems__(list(range(len(data.dataset))))
    expected, _ = _targets(store)
    torch.testing.assert_close(batch[GOAL_PIXELS_KEY][:n], expected)
    assert not batch["goal_pixels_is_pad"][store.episode_starts, 0].any()
    assert batch["goal_pixels_is_pad"][n:].all()
