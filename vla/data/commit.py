"""A commit record of a finalised LeRobotDataset, and recovery to it after a crash.

lerobot rewrites ``meta/info.json``, ``meta/stats.json`` and ``meta/tasks.parquet`` in place at
every ``save_episode`` (so ``info.json`` counts episodes whose metadata is still buffered), and it
writes a parquet file's footer only when the file is closed. A process killed at the wrong moment
therefore leaves counts ahead of the episode index, half-written metadata files, or data files no
episode points to; lerobot then refuses to open the dataset.

After each ``finalize()`` the recorder writes ``meta/recorder_commit.json`` atomically: the info,
stats and tasks at that point and the episode-metadata files that exist. Recovery puts the metadata
back to that record and moves every file written after it into ``root/orphaned`` (never deleting),
so whatever was finalised stays readable and the next run appends after it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMMIT_PATH = "meta/recorder_commit.json"
ORPHANED_DIR = "orphaned"


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, json.dumps(obj, indent=2).encode())


def _episode_meta_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "meta" / "episodes").glob("**/*.parquet"))


def write_commit(root: Path) -> None:
    """Record the current (finalised) metadata of ``root`` as the point to recover to."""
    import pandas as pd

    meta = root / "meta"
    stats_file = meta / "stats.json"
    tasks_file = meta / "tasks.parquet"
    tasks: list[list[Any]] = []
    if tasks_file.exists():
        frame = pd.read_parquet(tasks_file)
        tasks = [[str(task), int(index)] for task, index in zip(frame.index, frame["task_index"], strict=True)]
    record = {
        "info": json.loads((meta / "info.json").read_text()),
        "stats": json.loads(stats_file.read_text()) if stats_file.exists() else None,
        "tasks": tasks,
        "episode_meta_files": _episode_meta_files(root),
    }
    _atomic_write_json(root / COMMIT_PATH, record)


def read_commit(root: Path) -> dict[str, Any] | None:
    path = root / COMMIT_PATH
    return json.loads(path.read_text()) if path.exists() else None


def committed_episodes(root: Path) -> int | None:
    """Episodes finalised at the last commit, or ``None`` if ``root`` has no commit record."""
    record = read_commit(root)
    return None if record is None else int(record["info"]["total_episodes"])


def _move_aside(root: Path, files: list[Path]) -> list[Path]:
    moved = []
    for f in files:
        dest = root / ORPHANED_DIR / f.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # a second crash left the same name: keep both
            dest = dest.with_name(f"{dest.stem}.{len(list(dest.parent.iterdir()))}{dest.suffix}")
        shutil.move(f, dest)
        moved.append(dest)
    return moved


def _referenced_payload_files(root: Path, episode_meta_files: list[Path]) -> set[Path]:
    """Data (and video) files that the given episode-metadata files point to."""
    import pyarrow.parquet as pq

    referenced: set[Path] = set()
    for f in episode_meta_files:
        try:
            table = pq.read_table(f)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise RuntimeError(
                f"episode metadata file {f} is unreadable ({exc}); the dataset at {root} was not written by "
                "this recorder's commit protocol, so it cannot be repaired safely. Move that file away and "
                "fix meta/info.json by hand, or record into a new root"
            ) from exc
        columns = table.to_pydict()
        for c, i in zip(columns["data/chunk_index"], columns["data/file_index"], strict=True):
            referenced.add(root / "data" / f"chunk-{c:03d}" / f"file-{i:03d}.parquet")
        for name in columns:
            if name.startswith("videos/") and name.endswith("/chunk_index"):
                key = name[len("videos/"):-len("/chunk_index")]
                files = columns[f"videos/{key}/file_index"]
                for c, i in zip(columns[name], files, strict=True):
                    if c is not None and i is not None:
                        referenced.add(root / "videos" / key / f"chunk-{c:03d}" / f"file-{i:03d}.mp4")
    return referenced


def recover(root: Path) -> list[Path]:
    """Return ``root`` to its last commit; files written after it go to ``root/orphaned``.

    Without a commit record (a dataset from elsewhere) the metadata is trusted as it is and only
    data files that no episode references are moved aside. Returns the moved files' new paths.
    """
    import pandas as pd

    record = read_commit(root)
    moved: list[Path] = []
    if record is not None:
        keep = set(record["episode_meta_files"])
        later = [root / rel for rel in _episode_meta_files(root) if rel not in keep]
        moved += _move_aside(root, later)
        meta = root / "meta"
        _atomic_write_json(meta / "info.json", record["info"])
        if record["stats"] is not None:
            _atomic_write_json(meta / "stats.json", record["stats"])
        if record["tasks"]:
            names, indices = zip(*record["tasks"], strict=True)
            tasks = pd.DataFrame({"task_index": list(indices)}, index=pd.Index(list(names), name="task"))
            tmp = meta / "tasks.parquet.tmp"
            tasks.to_parquet(tmp)
            os.replace(tmp, meta / "tasks.parquet")
    episode_meta = [root / rel for rel in _episode_meta_files(root)]
    if episode_meta:
        referenced = _referenced_payload_files(root, episode_meta)
        payload = sorted((root / "data").glob("**/*.parquet")) + sorted((root / "videos").glob("**/*.mp4"))
        moved += _move_aside(root, [f for f in payload if f not in referenced])
    if moved:
        log.warning("moved %d file(s) of an interrupted run to %s", len(moved), root / ORPHANED_DIR)
    return moved
