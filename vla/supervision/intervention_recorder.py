"""Records supervised episodes into a LeRobotDataset with a per-frame ``intervention`` flag.

Whole episodes are written, not only the takeover segments: a frame the policy drove is flagged
False, a frame the operator drove True. DAgger then trains on the operator's frames (whose action
chunks run on into the hand-back, showing how the recovered situation continues) and can weight
them against demos; the policy frames give the context in which the operator stepped in.

By default only episodes with at least one intervention are kept (``keep="interventions"``);
``keep="all"`` writes every episode. The dataset is written through
:class:`~vla.data.recorder.DatasetRecorder`, so episodes finalised so far survive a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla.data.recorder import DatasetRecorder, dataset_features, existing_episodes
from vla.types import ACTION_KEY, IMAGE_PREFIX, STATE_KEY

INTERVENTION_KEY = "intervention"
# bool, shape (1,): lerobot 0.6.1 stores it as a parquet list<bool> and reads it back as a bool tensor.
INTERVENTION_FEATURE: dict[str, Any] = {"dtype": "bool", "shape": (1,), "names": None}
KEEP_MODES = ("interventions", "all")


@dataclass
class RecordedEpisode:
    frames: int
    interventions: int  # operator-driven frames
    kept: bool


class InterventionRecorder:
    """Buffer one episode at a time; on ``end_episode`` write it (or drop it, per ``keep``)."""

    def __init__(
        self,
        root: str | Path,
        repo_id: str,
        fps: int,
        cameras: Sequence[str],
        image_size: int,
        state_names: Sequence[str],
        action_names: Sequence[str],
        robot_type: str,
        keep: str = "interventions",
        flush_every: int = 1,
    ) -> None:
        if keep not in KEEP_MODES:
            raise ValueError(f"record.keep={keep!r} is unknown; choose from {list(KEEP_MODES)}")
        self.keep, self.cameras = keep, tuple(cameras)
        self.features = dataset_features(self.cameras, image_size, state_names, action_names,
                                         extra={INTERVENTION_KEY: dict(INTERVENTION_FEATURE)})
        # A new dataset is created with the first kept episode, so a run without takeovers leaves no empty
        # dataset behind; an existing one is opened now, so a feature mismatch is reported before the run.
        self._root, self._rec = Path(root), None
        self._args = (repo_id, fps, robot_type, flush_every)
        if (self._root / "meta" / "info.json").exists():
            self._recorder()
        elif self._root.exists() and any(self._root.iterdir()):
            raise FileExistsError(f"record.root={str(self._root)!r} exists and is not a LeRobotDataset; "
                                  "choose an empty or new folder")
        self._frames: list[dict[str, Any]] = []
        self._task: str | None = None
        self.episodes_written = 0

    @property
    def root(self) -> Path:
        return self._root

    @property
    def num_episodes(self) -> int:
        """Episodes in the dataset (including those of earlier runs appended to)."""
        if self._rec is not None:
            return self._rec.num_episodes
        return existing_episodes(self._root)

    def _recorder(self) -> DatasetRecorder:
        if self._rec is None:
            repo_id, fps, robot_type, flush_every = self._args
            self._rec = DatasetRecorder(self._root, repo_id, fps, self.features, robot_type, flush_every=flush_every)
        return self._rec

    def begin_episode(self, task: str) -> None:
        self._frames, self._task = [], task

    def add_frame(self, observation: Mapping[str, Any], action: np.ndarray, intervention: bool) -> None:
        """One control tick: the observation the action was chosen from, the action sent, who chose it."""
        if self._task is None:
            raise RuntimeError("call begin_episode(task) before add_frame")
        frame = {IMAGE_PREFIX + c: np.asarray(observation[IMAGE_PREFIX + c]) for c in self.cameras}
        frame[STATE_KEY] = np.asarray(observation[STATE_KEY], dtype=np.float32)
        frame[ACTION_KEY] = np.asarray(action, dtype=np.float32)
        frame[INTERVENTION_KEY] = np.array([bool(intervention)])
        self._frames.append(frame)

    def end_episode(self) -> RecordedEpisode:
        frames, task = self._frames, self._task
        self._frames, self._task = [], None
        n_int = int(sum(bool(f[INTERVENTION_KEY][0]) for f in frames))
        kept = bool(frames) and task is not None and (self.keep == "all" or n_int > 0)
        if kept:
            self._recorder().add_episode(frames, task)
            self.episodes_written += 1
        return RecordedEpisode(len(frames), n_int, kept)

    def discard_episode(self) -> None:
        self._frames, self._task = [], None

    def close(self) -> None:
        self.discard_episode()
        if self._rec is not None:
            self._rec.close()

    def __enter__(self) -> InterventionRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_intervention_flags(root: str | Path) -> dict[int, np.ndarray]:
    """Episode index -> (T,) bool intervention flags in frame order, read from the dataset's parquet files."""
    import pyarrow.parquet as pq

    root = Path(root)
    files = sorted((root / "data").glob("**/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no data files under {root / 'data'}; is {root} a recorded dataset?")
    out: dict[int, list[tuple[int, bool]]] = {}
    for f in files:
        cols = pq.read_table(f, columns=["episode_index", "frame_index", INTERVENTION_KEY]).to_pydict()
        for ep, fr, flag in zip(cols["episode_index"], cols["frame_index"], cols[INTERVENTION_KEY], strict=True):
            out.setdefault(int(ep), []).append((int(fr), bool(flag[0] if isinstance(flag, list) else flag)))
    return {ep: np.array([v for _, v in sorted(rows)], dtype=bool) for ep, rows in sorted(out.items())}
