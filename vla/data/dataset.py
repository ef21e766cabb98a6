"""LeRobotDataset -> frames held in memory -> batches of action chunks.

A demo set of a few hundred episodes at 96x96 fits in memory as uint8 (200 x 80 frames x 2 cameras
is ~0.9 GB), so every frame is decoded once at start-up and batches are plain tensor gathers: no PNG
decoding, no per-sample Python in the training hot path. That is also why the DataLoader defaults to
0 workers; workers only pay off when a batch's gather is slower than the step it feeds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.io import ImageReadMode, decode_image

from vla.data.keyframes import gripper_keyframes
from vla.model_config import GOAL_FRAMES
from vla.types import ACTION_KEY, GOAL_KEY, GOAL_PIXELS_KEY, IMAGE_PREFIX, STATE_KEY, TASK_KEY, FeatureSpec


@dataclass
class FrameStore:
    """Every frame of the loaded episodes, sorted by (episode, frame) so an episode is a contiguous run."""

    spec: FeatureSpec
    images: dict[str, torch.Tensor]  # feature key -> (N, 3, H, W) uint8
    state: torch.Tensor  # (N, S) float32
    action: torch.Tensor  # (N, A) float32
    episode_index: torch.Tensor  # (N,) int64, the dataset's episode ids
    task_index: torch.Tensor  # (N,) int64 into ``tasks``
    tasks: list[str]
    episode_end: torch.Tensor = field(init=False)  # (N,) exclusive end of each frame's episode

    def __post_init__(self) -> None:
        ids = self.episode_index
        if ids.numel() and (ids[1:] < ids[:-1]).any():
            raise ValueError("FrameStore needs frames sorted by episode_index")
        _, counts = torch.unique_consecutive(ids, return_counts=True)
        ends = torch.cumsum(counts, 0)
        self.episode_end = torch.repeat_interleave(ends, counts)

    def __len__(self) -> int:
        return int(self.episode_index.numel())

    @property
    def episode_ids(self) -> list[int]:
        return torch.unique_consecutive(self.episode_index).tolist()

    @property
    def episode_starts(self) -> torch.Tensor:
        """Frame index of the first frame of every episode, in store order."""
        _, counts = torch.unique_consecutive(self.episode_index, return_counts=True)
        return torch.cumsum(counts, 0) - counts

    def frames_of(self, episodes: Sequence[int]) -> torch.Tensor:
        return torch.nonzero(torch.isin(self.episode_index, torch.as_tensor(list(episodes)))).flatten()


def feature_spec(features: dict[str, dict[str, Any]], fps: int) -> FeatureSpec:
    """Build the policy's FeatureSpec from a LeRobotDataset ``features`` dict; names what is missing."""
    image_keys = sorted(k for k in features if k.startswith(IMAGE_PREFIX))
    missing = [k for k in (STATE_KEY, ACTION_KEY) if k not in features]
    if not image_keys:
        missing.insert(0, f"{IMAGE_PREFIX}<camera>")
    if missing:
        raise ValueError(f"dataset lacks required feature(s) {missing}; it has {sorted(features)}. "
                         f"Record the demos with `python scripts/collect.py`, which writes all of them")
    videos = [k for k in image_keys if features[k]["dtype"] != "image"]
    if videos:
        raise ValueError(f"camera feature(s) {videos} are stored as {features[videos[0]]['dtype']!r}; this "
                         "loader reads dtype 'image' (PNG in parquet): record with use_videos=False")
    shapes = {k: tuple(features[k]["shape"]) for k in image_keys}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"all cameras must share one image shape, got {shapes}; "
                         "resize them at collection time")
    h, w, c = shapes[image_keys[0]]
    action_names = _names(features[ACTION_KEY])
    return FeatureSpec(
        cameras=tuple(k.removeprefix(IMAGE_PREFIX) for k in image_keys),
        image_shape=(c, h, w),
        state_dim=int(np.prod(features[STATE_KEY]["shape"])),
        action_dim=int(np.prod(features[ACTION_KEY]["shape"])),
        gripper_dims=tuple(i for i, n in enumerate(action_names) if "gripper" in n.lower()),
        fps=int(fps),
        state_names=_names(features[STATE_KEY]),
        action_names=action_names,
    )


def _names(feature: dict[str, Any]) -> tuple[str, ...]:
    names = feature.get("names")
    if isinstance(names, dict):  # some LeRobot datasets group names, e.g. {"motors": [...]}
        names = [n for group in names.values() for n in group]
    return tuple(str(n) for n in names) if names else ()


def load_frames(root: str | Path, repo_id: str = "local/demos",
                episodes: Sequence[int] | None = None) -> FrameStore:
    """Decode a local LeRobotDataset (all or the listed episodes) into a FrameStore; never the hub."""
    root = Path(root).expanduser()
    hint = f"record demos there with `python scripts/collect.py env=<task> root={root}`, or set data.root"
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {str(root)!r} does not exist; {hint}")
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{str(root)!r} is not a LeRobotDataset (no meta/info.json); {hint}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # heavy import, only when a dataset is read

    # pyav is named so that LeRobot does not probe torchcodec: these datasets hold PNGs, not videos.
    ds = LeRobotDataset(repo_id, root=root, episodes=list(episodes) if episodes is not None else None,
                        video_backend="pyav")
    spec = feature_spec(ds.meta.features, ds.meta.fps)
    table: pa.Table = ds.hf_dataset.with_format("arrow")[:]
    if table.num_rows == 0:
        raise ValueError(f"dataset at {str(root)!r} has no frames for episodes={episodes}")
    episode = table.column("episode_index").to_numpy()
    order = np.lexsort((table.column("frame_index").to_numpy(), episode))
    sorted_already = bool((order == np.arange(len(order))).all())
    take = None if sorted_already else pa.array(order)

    def column(name: str) -> pa.ChunkedArray:
        col = table.column(name)
        return col if take is None else col.take(take)

    task_names = {int(i): str(name) for name, i in zip(ds.meta.tasks.index, ds.meta.tasks["task_index"],
                                                       strict=True)}
    tasks = [task_names[i] for i in sorted(task_names)]
    remap = {i: k for k, i in enumerate(sorted(task_names))}
    task_index = np.array([remap[int(i)] for i in column("task_index").to_numpy()], dtype=np.int64)
    images = {key: _decode_images(column(key), spec.image_shape, key) for key in spec.image_keys()}
    return FrameStore(
        spec=spec,
        images=images,
        state=_vectors(column(STATE_KEY), spec.state_dim),
        action=_vectors(column(ACTION_KEY), spec.action_dim),
        episode_index=torch.from_numpy(np.ascontiguousarray(episode[order])),
        task_index=torch.from_numpy(task_index),
        tasks=tasks,
    )


def _vectors(col: pa.ChunkedArray, dim: int) -> torch.Tensor:
    flat = col.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return torch.from_numpy(np.array(flat, dtype=np.float32).reshape(len(col), dim))


def _decode_images(col: pa.ChunkedArray, shape: tuple[int, int, int], key: str) -> torch.Tensor:
    structs = col.combine_chunks()
    blobs = structs.field("bytes").to_pylist()
    if any(b is None for b in blobs):
        raise ValueError(f"{key} has frames without embedded image bytes; "
                         "finalize() the dataset after recording")
    c, h, w = shape
    out = torch.empty((len(blobs), c, h, w), dtype=torch.uint8)

    def decode(i: int) -> None:
        img = decode_image(torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8), mode=ImageReadMode.RGB)
        if img.shape != (c, h, w):
            raise ValueError(f"{key} frame {i} has shape {tuple(img.shape)} (C, H, W), "
                             f"the dataset features say {(c, h, w)}")
        out[i] = img

    # torchvision's decoder releases the GIL, so threads decode in parallel without copying frames between
    # processes (PIL holds it: measured 2.2 s vs 5.3 s for 16k 96x96 PNGs).
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, range(len(blobs)), chunksize=256))
    return out


def split_episodes(episode_ids: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Episode-level split (frames of one episode never straddle train and val); deterministic in ``seed``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    ids = sorted(episode_ids)
    if val_fraction == 0.0:
        return ids, []
    if len(ids) < 2:
        raise ValueError(f"a validation split needs >= 2 episodes, the dataset has {len(ids)}; "
                         "set data.val_fraction=0 or record more episodes")
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
    val = {ids[i] for i in perm[:n_val]}
    return [i for i in ids if i not in val], sorted(val)


class ChunkDataset(Dataset):
    """Samples = frames of the chosen episodes; each carries the next ``chunk_size`` actions of its episode.

    Past the episode end the chunk repeats the last action and ``action_is_pad`` is True there, so a
    policy can learn to hold still at the end without being trained on another episode's actions.
    Images are float in [0, 1]; with ``uint8_images`` they stay uint8 so that a trainer moves a quarter
    of the bytes to the GPU and converts there (``images_to_float``): on a GPU host the CPU-side float
    conversion of 96x96 batches was as slow as the whole training step of the tiny model.
    """

    def __init__(self, store: FrameStore, chunk_size: int, episodes: Sequence[int] | None = None,
                 uint8_images: bool = False, keyframe_goals: bool = False, goal_frames: str = "all",
                 keyframe_pixels: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """``keyframe_goals`` adds ``goal_state`` (B, 2, S), the state at the episode's grasp and release
        (vla/data/keyframes.py), and ``goal_is_pad`` (B, 2), True where the episode has no such keyframe;
        with ``goal_frames="before"`` also True on the keyframe's own frame and every frame after it.
        ``keyframe_pixels``, from ``keyframe_pixels()`` over the whole store, adds ``goal_pixels``
        (B, n_cameras, 2, 2) and ``goal_pixels_is_pad`` (B, n_cameras, 2): also padded out of view."""
        if goal_frames not in GOAL_FRAMES:
            raise ValueError(f"goal_frames must be one of {GOAL_FRAMES}, got {goal_frames!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.store, self.chunk_size, self.uint8_images = store, chunk_size, uint8_images
        self.goals_before_keyframe = goal_frames == "before"
        self.frames = store.frames_of(episodes) if episodes is not None else torch.arange(len(store))
        if self.frames.numel() == 0:
            raise ValueError(f"no frames for episodes {list(episodes or [])}; "
                             f"the dataset has episodes {store.episode_ids}")
        self.keyframes: tuple[torch.Tensor, torch.Tensor] | None = None
        if keyframe_goals:
            if not store.spec.gripper_dims:
                raise ValueError("keyframe goals are found from the gripper command, and this dataset's "
                                 "actions have no gripper dim; set head.goal_loss_weight=0")
            self.keyframes = gripper_keyframes(store.action, store.episode_end, store.spec.gripper_dims[0])
        if keyframe_pixels is not None:
            if self.keyframes is None:
                raise ValueError("keyframe_pixels are padded like the keyframe goals; pass keyframe_goals=True too")
            pixels, seen = keyframe_pixels
            want = (len(store), len(store.spec.cameras), 2)
            if tuple(seen.shape) != want or tuple(pixels.shape) != (*want, 2):
                raise ValueError(f"keyframe_pixels have shapes {tuple(pixels.shape)} and {tuple(seen.shape)}; "
                                 f"expected {(*want, 2)} and {want} (every frame of the store, every camera)")
        self.keyframe_pixels = keyframe_pixels

    def __len__(self) -> int:
        return int(self.frames.numel())

    def __getitem__(self, i: int) -> dict[str, Any]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A whole batch in one vectorised gather (DataLoader calls this instead of per-item __getitem__)."""
        s = self.store
        frames = self.frames[torch.as_tensor(indices, dtype=torch.long)]
        last = (s.episode_end[frames] - 1)[:, None]
        steps = frames[:, None] + torch.arange(self.chunk_size)
        batch: dict[str, Any] = {k: s.images[k].index_select(0, frames) for k in s.spec.image_keys()}
        if not self.uint8_images:
            batch = images_to_float(batch)
        batch[STATE_KEY] = s.state[frames]
        batch[ACTION_KEY] = s.action[torch.minimum(steps, last)]
        batch["action_is_pad"] = steps > last
        batch[TASK_KEY] = [s.tasks[t] for t in s.task_index[frames].tolist()]
        if self.keyframes is not None:
            key_frames, key_valid = self.keyframes
            batch[GOAL_KEY] = s.state[key_frames[frames]]
            batch["goal_is_pad"] = ~key_valid[frames]
            if self.goals_before_keyframe:
                batch["goal_is_pad"] |= frames[:, None] >= key_frames[frames]
        if self.keyframe_pixels is not None:
            pixels, seen = self.keyframe_pixels
            batch[GOAL_PIXELS_KEY] = pixels[frames]
            batch["goal_pixels_is_pad"] = ~seen[frames] | batch["goal_is_pad"][:, None, :]
        return batch


def images_to_float(batch: dict[str, Any]) -> dict[str, Any]:
    """uint8 camera images -> float in [0, 1], on whatever device they are; other entries unchanged."""
    return {k: v.float().div_(255.0) if k.startswith(IMAGE_PREFIX) and v.dtype == torch.uint8 else v
            for k, v in batch.items()}


class ChunkBatchSampler(Sampler[list[int]]):
    """Endless, resumable, rank-sharded batches of indices.

    Epoch ``e`` is a permutation drawn from ``seed + e``; rank ``r`` of ``world_size`` takes every
    ``world_size``-th index of it (what DistributedSampler does), cut to an equal share so all ranks run
    the same number of steps. Batch ``b`` is a pure function of (seed, b), so resuming only needs the
    number of batches already consumed: ``start_batch``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0) -> None:
        per_rank = n // world_size
        if batch_size < 1 or per_rank < batch_size:
            raise ValueError(f"batch_size={batch_size} needs at least that many samples per rank, but there "
                             f"are {n} samples over {world_size} rank(s); lower train.batch_size or add data")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.batches_per_epoch = per_rank // batch_size

    def _epoch(self, epoch: int) -> torch.Tensor:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        return perm[self.rank :: self.world_size][: self.n // self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, k = divmod(self.start_batch, self.batches_per_epoch)
        while True:
            perm = self._epoch(epoch)
            for j in range(k, self.batches_per_epoch):
                yield perm[j * self.batch_size : (j + 1) * self.batch_size].tolist()
            epoch, k = epoch + 1, 0

    def __len__(self) -> int:
        return self.batches_per_epoch


def _whole_batch(batch: dict[str, Any]) -> dict[str, Any]:
    return batch  # __getitems__ already returns the collated batch


def make_loader(dataset: ChunkDataset, sampler: ChunkBatchSampler, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """DataLoader over the sampler; 0 workers (default) gathers in the main process, fastest in memory."""
    if num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
    # Its own generator: creating a DataLoader iterator otherwise draws from the global torch RNG, which
    # would shift dropout/augmentation noise after a resume (the iterator is created once more there).
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=_whole_batch,
                      pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(sampler.seed))
