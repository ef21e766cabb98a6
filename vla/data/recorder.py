"""Writes episodes into a LeRobotDataset (v3) at a local root, durably.

lerobot keeps one parquet file open across episodes and writes its footer only at ``finalize()``;
a run killed before that would lose every episode of the open file. The recorder therefore
finalises every ``flush_every`` episodes and reopens with ``LeRobotDataset.resume`` (which starts
a new data file), and finalises on any exception. After each finalise it writes a commit record
(:mod:`vla.data.commit`); on open, a dataset is put back to its last commit and files written after
it are moved aside, so what was finalised stays readable whatever moment a run was killed at.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla.data.commit import committed_episodes, recover, write_commit
from vla.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, TASK_KEY

log = logging.getLogger(__name__)

# lerobot logs these notices every time a dataset is created or reopened, and the recorder reopens after every
# flush: a recording of 400 episodes would print 1200 identical lines. Once per process says it all.
REPEATED_LEROBOT_NOTICES = ("lerobot.utils.import_utils", "lerobot.configs.video")


class OncePerProcess(logging.Filter):
    """Let each distinct (logger, message) through once; drop its repeats."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def quiet_repeated_lerobot_notices() -> None:
    """Attach :class:`OncePerProcess` to lerobot's per-open notice loggers (idempotent)."""
    for name in REPEATED_LEROBOT_NOTICES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerProcess) for f in logger.filters):
            logger.addFilter(OncePerProcess())


def dataset_features(
    cameras: Sequence[str],
    image_size: int,
    state_names: Sequence[str],
    action_names: Sequence[str],
    use_videos: bool = False,
    extra: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """LeRobot feature dict for camera images, state and action (plus ``extra`` per-frame features)."""
    image = {
        "dtype": "video" if use_videos else "image",
        "shape": (image_size, image_size, 3),
        "names": ["height", "width", "channels"],
    }
    features: dict[str, dict[str, Any]] = {IMAGE_PREFIX + cam: dict(image) for cam in cameras}
    features[STATE_KEY] = {"dtype": "float32", "shape": (len(state_names),), "names": list(state_names)}
    features[ACTION_KEY] = {"dtype": "float32", "shape": (len(action_names),), "names": list(action_names)}
    features.update(extra or {})
    return features


def existing_episodes(root: Path) -> int:
    """Number of finalised episodes at ``root`` (0 if there is no dataset).

    The commit record is authoritative where there is one: lerobot's ``info.json`` also counts
    episodes whose metadata a killed run never wrote.
    """
    committed = committed_episodes(root)
    if committed is not None:
        return committed
    info = root / "meta" / "info.json"
    return int(json.loads(info.read_text())["total_episodes"]) if info.exists() else 0


def _set_aside_uncommitted_root(root: Path) -> Path:
    """Move a dataset root with no finalised episode next to it, so a fresh one can be created."""
    n = 0
    while (dest := root.with_name(f"{root.name}.interrupted-{n}")).exists():
        n += 1
    shutil.move(root, dest)
    log.warning("%s held no finalised episode (interrupted before its first flush); moved it to %s", root, dest)
    return dest


class DatasetRecorder:
    """Append episodes to a local LeRobotDataset; safe against interruption."""

    def __init__(
        self,
        root: str | Path,
        repo_id: str,
        fps: int,
        features: dict[str, dict[str, Any]],
        robot_type: str,
        flush_every: int = 10,
        use_videos: bool = False,
    ) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        quiet_repeated_lerobot_notices()
        self.root = Path(root)
        self.repo_id = repo_id
        self.flush_every = max(1, flush_every)
        self._cls = LeRobotDataset
        if (self.root / "meta" / "info.json").exists() and existing_episodes(self.root) == 0:
            _set_aside_uncommitted_root(self.root)
        if (self.root / "meta" / "info.json").exists():
            recover(self.root)
            self._check_features(features)
            if committed_episodes(self.root) is None:  # from elsewhere: what it holds now is the recovery point
                write_commit(self.root)
            self._ds = LeRobotDataset.resume(repo_id, root=self.root)
        else:
            if self.root.exists() and any(self.root.iterdir()):
                raise FileExistsError(
                    f"{self.root} exists and is not a LeRobotDataset (no meta/info.json); "
                    "choose an empty or new root, or delete it"
                )
            if self.root.exists():
                self.root.rmdir()
            self._ds = LeRobotDataset.create(
                repo_id, fps=fps, features=features, root=self.root, robot_type=robot_type,
                use_videos=use_videos,
            )
        self._since_flush = 0

    def _check_features(self, features: dict[str, dict[str, Any]]) -> None:
        info = json.loads((self.root / "meta" / "info.json").read_text())
        have = info["features"]
        for key, spec in features.items():
            if key not in have or tuple(have[key]["shape"]) != tuple(spec["shape"]):
                found = {k: tuple(v["shape"]) for k, v in have.items() if not k.startswith(("index", "episode"))}
                raise ValueError(
                    f"cannot append to {self.root}: feature {key!r} with shape {tuple(spec['shape'])} "
                    f"does not match the dataset's features {found}; record into a new root instead"
                )

    @property
    def num_episodes(self) -> int:
        return self._ds.meta.total_episodes

    def add_episode(self, frames: Sequence[Mapping[str, Any]], task: str) -> None:
        """Write one whole episode; each frame maps feature names to arrays."""
        for frame in frames:
            self._ds.add_frame({**{k: np.asarray(v) for k, v in frame.items()}, TASK_KEY: task})
        self._ds.save_episode()
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Finalise what is written so far and reopen for appending."""
        if self._since_flush == 0:
            return
        self._ds.finalize()
        write_commit(self.root)
        self._ds = self._cls.resume(self.repo_id, root=self.root)
        self._since_flush = 0

    def close(self) -> None:
        if self._ds.has_pending_frames():
            self._ds.clear_episode_buffer()
        self._ds.finalize()
        if self._since_flush:
            write_commit(self.root)
            self._since_flush = 0

    def __enter__(self) -> DatasetRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
