"""A small demo dataset written the way scripts/collect.py writes one (DatasetRecorder, PNG frames).

Values encode where they come from, so tests can check that batches carry the right frames:
state[:] = 100 * episode + frame, action = [episode, frame, ..., gripper] with the gripper closing
half-way through the episode, and every pixel of a camera image equals (frame * 10 + cam) % 256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla.data.recorder import DatasetRecorder, dataset_features

CAMERAS = ("front", "wrist")
STATE_NAMES = ("j0", "j1", "j2", "j3")
ACTION_NAMES = ("j0", "j1", "gripper")
TASKS = ("pick up the red cube", "put the blue cube in the bowl")
LENGTHS = [12, 7, 15, 9]  # unequal, so chunks run past episode ends at different places


def episode_frames(episode: int, n_frames: int, image_size: int) -> list[dict[str, np.ndarray]]:
    frames = []
    for f in range(n_frames):
        frame = {f"observation.images.{cam}": np.full((image_size, image_size, 3), (f * 10 + c) % 256, np.uint8)
                 for c, cam in enumerate(CAMERAS)}
        frame["observation.state"] = np.full(len(STATE_NAMES), 100.0 * episode + f, np.float32)
        frame["action"] = np.array([episode, f, float(f >= n_frames // 2)], np.float32)
        frames.append(frame)
    return frames


def write_demos(root: Path, lengths: list[int] = LENGTHS, image_size: int = 32, flush_every: int = 2) -> Path:
    """One episode per entry of ``lengths``; tasks alternate between TASKS."""
    features = dataset_features(CAMERAS, image_size, STATE_NAMES, ACTION_NAMES)
    with DatasetRecorder(root, "local/test", 10, features, "arm6", flush_every=flush_every) as rec:
        for ep, n in enumerate(lengths):
            rec.add_episode(episode_frames(ep, n, image_size), TASKS[ep % len(TASKS)])
    return root
