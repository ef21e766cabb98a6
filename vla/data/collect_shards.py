"""Sharded recording: ``writers`` processes each run the scripted expert and write their own LeRobotDataset
shard, and the shards are merged into the destination at the end.

With one writer, every frame of every worker passes through LeRobot's writer in one process (image
encoding, per-episode parquet and statistics: about 5 ms a frame on a 2-core CPU), so a 16-core host
records no faster than a 4-core one. Shard ``i`` of ``n`` takes seeds ``seed + i``, ``seed + i + n``, ...,
so no two shards share a scene and a failed expert episode only moves its own shard to its next seed.
The shards live in ``<root>.shards/`` until the merge succeeds: a killed recording is resumed by running
the same command again, each shard continuing from its own saved seed. The plan (writers, seed, episodes)
is saved beside the shards, since resuming under another plan would make shards share seeds.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vla.data.collect import CollectConfig, CollectSummary, collect
from vla.data.merge import merge_datasets
from vla.data.recorder import existing_episodes
from vla.parallel import JobFailed, run_in_processes

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"


def shards_dir(root: str | Path) -> Path:
    """Where the shards of a recording into ``root`` live: beside it (a trailing slash changes nothing)."""
    root = Path(root)
    return root.with_name(f"{root.name}.shards")


def shard_configs(cfg: CollectConfig) -> list[CollectConfig]:
    """One single-process recording per writer: its root, its share of the episodes and its first seed."""
    base, extra = divmod(cfg.episodes, cfg.writers)
    return [
        replace(cfg, root=str(shards_dir(cfg.root) / f"shard-{i:03d}"), episodes=base + (i < extra),
                seed=cfg.seed + i, workers=1, writers=1)
        for i in range(cfg.writers)
        if base + (i < extra) > 0
    ]


def _check_plan(cfg: CollectConfig) -> None:
    """Save the plan of a new sharded recording, or refuse to resume one under a different plan."""
    plan = {"writers": cfg.writers, "seed": cfg.seed, "episodes": cfg.episodes, "task": cfg.env.task}
    path = shards_dir(cfg.root) / PLAN_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != plan:
            raise ValueError(
                f"{path.parent} holds a recording started with {saved}, and this one asks for {plan}; resuming "
                f"under another plan would record some seeds twice. Rerun with the saved settings, or delete "
                f"{path.parent} to start over"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan))


def _recorded_so_far(shards: list[CollectConfig], last: int) -> int:
    """Episodes the shards hold now, for the progress bar. A shard's writer may be rewriting the metadata this
    reads at this very moment (LeRobot writes ``info.json`` in place), so a torn read keeps the last count."""
    try:
        return sum(existing_episodes(Path(s.root)) for s in shards)
    except (ValueError, OSError):  # json.JSONDecodeError is a ValueError
        return last


def _record_shard(shard: CollectConfig, stride: int) -> CollectSummary:
    return collect(shard, progress=False, seed_stride=stride)


def _record(shards: list[CollectConfig], stride: int, bar: Any) -> list[CollectSummary]:
    """Run every shard in its own process; a shard's error, or a shard process's death, stops them all."""

    def refresh() -> None:
        bar.n = _recorded_so_far(shards, bar.n)
        bar.refresh()

    try:
        return run_in_processes(_record_shard, [(s, stride) for s in shards], [s.root for s in shards],
                                max_running=len(shards), on_poll=refresh)
    except JobFailed as exc:
        raise RuntimeError(f"shard {exc.name} failed: {exc.detail}\nThe finished episodes are kept in "
                           f"{Path(shards[0].root).parent}: rerun the same command to resume") from exc


def collect_in_shards(cfg: CollectConfig, progress: bool = True) -> CollectSummary:
    """Record ``cfg.episodes`` expert episodes at ``cfg.root`` with ``cfg.writers`` writer processes."""
    from tqdm import tqdm

    root = Path(cfg.root)
    shards_root = shards_dir(root)
    have = existing_episodes(root)
    if have >= cfg.episodes:
        if shards_root.exists():  # left by a run killed between its merge and its clean-up
            shutil.rmtree(shards_root)
        return CollectSummary(str(root), 0, 0, have, 0, 0, 0.0)
    if have:
        raise ValueError(
            f"{root} already holds {have} episodes; a sharded recording (writers={cfg.writers}) writes a new "
            "dataset. Extend this one with writers=1, or record into a new root"
        )
    if root.exists():
        kept = f" (the shards in {shards_root} are kept)" if shards_root.exists() else ""
        raise FileExistsError(f"{root} exists but holds no finished dataset; a sharded recording merges into a new "
                              f"root. Move or delete it and rerun{kept}")
    _check_plan(cfg)
    shards = shard_configs(cfg)
    start = time.perf_counter()
    bar = tqdm(total=cfg.episodes, desc=f"collect {cfg.env.task} ({len(shards)} writers)", unit="ep",
               disable=not progress)
    try:
        parts = _record(shards, cfg.writers, bar)
        bar.n = sum(p.total_episodes for p in parts)
    finally:
        bar.close()
    merge_datasets([s.root for s in shards], root, cfg.repo_id)
    shutil.rmtree(shards_root)
    return CollectSummary(
        root=str(root),
        recorded=sum(p.recorded for p in parts),
        discarded=sum(p.discarded for p in parts),
        total_episodes=existing_episodes(root),
        frames=sum(p.frames for p in parts),
        attempts=sum(p.attempts for p in parts),
        seconds=time.perf_counter() - start,
        with_miss=sum(p.with_miss for p in parts),
    )
