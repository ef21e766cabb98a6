"""Sharded recording: ``writers`` processes each run the scripted expert and write their own LeRobotDataset
shard, and the shards are merged into the destination at the end.

With one writer, every frame of every worker passes through LeRobot's writer in one process (image
encoding, per-episode parquet and statistics: about 5 ms a frame on a 2-core CPU), so a 16-core host
records no faster than a 4-core one. Shard ``i`` of ``n`` takes seeds ``seed + i``, ``seed + i + n``, ...,
so no two shards share a scene and a failed expert episode only moves its own shard to its next seed.
The shards live in ``<root>.shards/`` until the merge succeeds: a killed recording is resumed by running
the same command again, each shard continuing from its own saved seed.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
import time
from dataclasses import replace
from pathlib import Path

from vla.data.collect import CollectConfig, CollectSummary, collect, read_next_seed, write_next_seed
from vla.data.merge import merge_datasets
from vla.data.recorder import existing_episodes

log = logging.getLogger(__name__)


def shard_configs(cfg: CollectConfig) -> list[CollectConfig]:
    """One single-process recording per writer: its root, its share of the episodes and its first seed."""
    shards_dir = Path(f"{cfg.root}.shards")
    base, extra = divmod(cfg.episodes, cfg.writers)
    return [
        replace(cfg, root=str(shards_dir / f"shard-{i:03d}"), episodes=base + (i < extra), seed=cfg.seed + i,
                workers=1, writers=1)
        for i in range(cfg.writers)
        if base + (i < extra) > 0
    ]


def _recorded_so_far(shards: list[CollectConfig], last: int) -> int:
    """Episodes the shards hold now, for the progress bar. A shard's writer may be rewriting the metadata this
    reads at this very moment (LeRobot writes ``info.json`` in place), so a torn read keeps the last count."""
    try:
        return sum(existing_episodes(Path(s.root)) for s in shards)
    except (ValueError, OSError):  # json.JSONDecodeError is a ValueError
        return last


def _record_shard(args: tuple[CollectConfig, int]) -> CollectSummary:
    shard, stride = args
    return collect(shard, progress=False, seed_stride=stride)


def collect_in_shards(cfg: CollectConfig, progress: bool = True) -> CollectSummary:
    """Record ``cfg.episodes`` expert episodes at ``cfg.root`` with ``cfg.writers`` writer processes."""
    from tqdm import tqdm

    root = Path(cfg.root)
    have = existing_episodes(root)
    if have >= cfg.episodes:
        return CollectSummary(str(root), 0, 0, have, 0, 0, 0.0)
    if have:
        raise ValueError(
            f"{root} already holds {have} episodes; a sharded recording (writers={cfg.writers}) writes a new "
            "dataset. Extend this one with writers=1, or record into a new root"
        )
    shards = shard_configs(cfg)
    start = time.perf_counter()
    bar = tqdm(total=cfg.episodes, desc=f"collect {cfg.env.task} ({len(shards)} writers)", unit="ep",
               disable=not progress)
    ctx = mp.get_context("spawn")
    with ctx.Pool(len(shards)) as pool:
        pending = pool.map_async(_record_shard, [(s, cfg.writers) for s in shards])
        while not pending.ready():
            pending.wait(2.0)
            bar.n = _recorded_so_far(shards, bar.n)
            bar.refresh()
        parts = pending.get()  # re-raises a shard's error; the shards stay for a resumed run
    bar.n = sum(p.total_episodes for p in parts)
    bar.close()
    merge_datasets([s.root for s in shards], root, cfg.repo_id)
    # Seeds used by any shard stay used: extending the merged dataset starts after all of them.
    next_seed = max(read_next_seed(Path(s.root), s.seed) for s in shards)
    write_next_seed(root, next_seed)
    shutil.rmtree(Path(f"{cfg.root}.shards"))
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
