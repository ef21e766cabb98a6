"""Demo datasets (LeRobotDataset v3 on local disk) -> in-memory frames -> batches of action chunks; stats."""

from vla.data.dataset import (
    ChunkBatchSampler,
    ChunkDataset,
    FrameStore,
    feature_spec,
    images_to_float,
    load_frames,
    make_loader,
    split_episodes,
)
from vla.data.stats import Stats, compute_stats, feature_stats, stats_from_json, stats_to_json

__all__ = [
    "ChunkBatchSampler",
    "ChunkDataset",
    "FrameStore",
    "Stats",
    "compute_stats",
    "feature_spec",
    "feature_stats",
    "images_to_float",
    "load_frames",
    "make_loader",
    "split_episodes",
    "stats_from_json",
    "stats_to_json",
]
