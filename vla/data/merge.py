"""Merge several local LeRobotDatasets (same features, fps and robot) into one, with LeRobot's own
``aggregate_datasets``: episodes are renumbered, tasks unified and statistics combined.

The merged dataset is built beside its destination and renamed into place, so the destination is either
absent or complete, and the sources are left untouched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vla.data.collect import read_next_seed, write_next_seed
from vla.data.commit import committed_episodes, write_commit
from vla.data.recorder import existing_episodes

log = logging.getLogger(__name__)

# Bookkeeping columns every LeRobotDataset has; their shapes say nothing about compatibility.
_BOOKKEEPING = {"timestamp", "frame_index", "episode_index", "index", "task_index"}


def _layout(root: Path) -> tuple[dict[str, Any], int, str | None]:
    info_file = root / "meta" / "info.json"
    if not info_file.is_file():
        raise FileNotFoundError(f"{root} is not a LeRobotDataset (no meta/info.json); check the path")
    info = json.loads(info_file.read_text())
    committed = committed_episodes(root)
    if committed is not None and committed != int(info["total_episodes"]):
        raise ValueError(f"{root} holds episodes past its last commit (a recording killed mid-episode): rerun its "
                         "scripts/collect.py command once to recover it, then merge")
    features = {k: (tuple(v["shape"]), v["dtype"]) for k, v in info["features"].items() if k not in _BOOKKEEPING}
    return features, int(info["fps"]), info.get("robot_type")


def check_mergeable(roots: Sequence[Path]) -> None:
    """Raise ``ValueError`` naming the first source whose features, fps or robot differ from the first's."""
    first = _layout(roots[0])
    for root in roots[1:]:
        other = _layout(root)
        if other != first:
            parts = ("features", "fps", "robot type")
            what = next(name for name, a, b in zip(parts, first, other, strict=True) if a != b)
            raise ValueError(f"cannot merge {root} into {roots[0]}'s layout: its {what} differ ({other} against "
                             f"{first}); record every source with the same env config")


def merge_datasets(roots: Sequence[str | Path], root: str | Path, repo_id: str) -> int:
    """Merge the datasets at ``roots``, in order, into a new dataset at ``root``; returns its episode count."""
    from lerobot.datasets.aggregate import aggregate_datasets

    sources = [Path(r) for r in roots]
    dest = Path(root)
    if not sources:
        raise ValueError("nothing to merge: give at least one source dataset")
    if dest.exists():
        raise FileExistsError(f"{dest} exists; merge into a new root (nothing there was changed)")
    check_mergeable(sources)
    staging = dest.with_name(f"{dest.name}.merging")
    if staging.exists():  # left by a merge that was killed: never a finished dataset
        shutil.rmtree(staging)
    log.info("merging %d datasets (%d episodes) into %s", len(sources), sum(map(existing_episodes, sources)), dest)
    try:
        aggregate_datasets([f"{repo_id}-part{i}" for i in range(len(sources))], repo_id, roots=sources,
                           aggr_root=staging)
        write_commit(staging)  # the recovery point for a later recording that extends the merged dataset
        # Seeds any source used stay used: a recording that extends the merged dataset starts after them all.
        seeds = [read_next_seed(src, -1) for src in sources]
        if max(seeds) >= 0:
            write_next_seed(staging, max(seeds))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(staging, dest)  # data, commit and next seed appear together
    return existing_episodes(dest)
