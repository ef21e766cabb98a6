"""Where do the grounding slots look? Their attention peaks against the objects' true image positions.

A checkpoint with grounding slots (vla/backbones/grounding.py) attends, per slot and camera, over a grid of
stem features. If a slot has learned to find "the named cube", its attention peak lands, scene after scene,
nearer to the named cube than to any other object; one that has only learned "a cube" lands on the named
cube about once in three. This module projects every cube and pad into each camera through MuJoCo's
camera model, takes each slot's peak at reset, and counts which object it is nearest to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from envs.camera import project_to_pixels
from envs.config import EnvConfig, make_env
from envs.tabletop import TabletopEnv
from vla.backbones.grounding import cell_centres
from vla.eval.rollout import obs_to_batch
from vla.policy import VLAPolicy

# What a slot's peak can land on, in the order of the counts below.
KINDS = ("named cube", "named pad", "other cube", "other pad")


def nearest_kind(peak: np.ndarray, objects: dict[str, np.ndarray]) -> str:
    """Which of KINDS the object nearest to ``peak`` is; ``objects`` maps a kind to (M, 2) positions."""
    best, best_d = "", np.inf
    for kind in KINDS:
        pts = objects.get(kind)
        if pts is None or len(pts) == 0:
            continue
        d = float(np.min(np.linalg.norm(pts - peak, axis=1)))
        if d < best_d:
            best, best_d = kind, d
    if not best:
        raise ValueError("no object is visible, so the peak cannot be assigned to one")
    return best


@dataclass
class GroundingHits:
    """Per (camera, slot): how often the peak landed nearest each kind, and its distance to the named ones."""

    cameras: tuple[str, ...]
    n_slots: int
    counts: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    dist_cube: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    dist_pad: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    # Per camera, summed over the counted scenes: the share of grid cells nearest each kind, i.e. what a
    # slot whose peak falls on a random cell would score (the chance level of the counts).
    cell_share: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, camera: str, slot: int, kind: str, to_cube: float, to_pad: float) -> None:
        key = (camera, slot)
        self.counts.setdefault(key, dict.fromkeys(KINDS, 0))[kind] += 1
        self.dist_cube.setdefault(key, []).append(to_cube)
        self.dist_pad.setdefault(key, []).append(to_pad)

    def add_chance(self, camera: str, centres: np.ndarray, objects: dict[str, np.ndarray]) -> None:
        share = self.cell_share.setdefault(camera, dict.fromkeys(KINDS, 0.0))
        kinds = [nearest_kind(c, objects) for c in centres]
        for kind in KINDS:
            share[kind] += kinds.count(kind) / len(kinds)

    def scenes(self, camera: str, slot: int) -> int:
        return sum(self.counts.get((camera, slot), {}).values())


def _scene_objects(env: TabletopEnv, camera: int) -> dict[str, np.ndarray]:
    assert env.episode is not None
    cubes = np.stack([env.cube_pos(i) for i in range(env.task.n_cubes)])
    pads = np.stack([env.pad_pos(i) for i in range(env.task.n_pads)])
    out: dict[str, np.ndarray] = {}
    for name, pts, named in (("cube", cubes, env.episode.object_index), ("pad", pads, env.episode.target_index)):
        px, vis = project_to_pixels(env.model, env.data, camera, pts, env.image_size)
        mine = np.arange(len(pts)) == named
        out[f"named {name}"] = px[mine & vis]
        out[f"other {name}"] = px[~mine & vis]
    return out


@torch.no_grad()
def grounding_hits(policy: VLAPolicy, env_cfg: EnvConfig, seeds: Sequence[int]) -> GroundingHits:
    """Reset each scene of ``seeds``, take each slot's attention peak per camera, and count what it lands on.

    A camera in which the named cube or the named pad is out of view does not count that scene.
    """
    env = make_env(env_cfg)
    base: TabletopEnv = env.unwrapped  # type: ignore[assignment]
    if base.task.target_kind != "pad":
        raise ValueError(f"grounding hits need a task with named pads (pick_place); got {base.task.name}")
    policy.eval()
    hits: GroundingHits | None = None
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            maps = policy.grounding_maps(obs_to_batch(obs, policy.device))[0].float().cpu().numpy()  # (N, K, h, w)
            cams = tuple(policy.spec.cameras)
            if hits is None:
                hits = GroundingHits(cams, maps.shape[1])
            centres = cell_centres(maps.shape[2], maps.shape[3], base.image_size)
            for c, cam in enumerate(cams):
                objects = _scene_objects(base, base.camera_id(cam))
                if len(objects["named cube"]) == 0 or len(objects["named pad"]) == 0:
                    continue
                hits.add_chance(cam, centres, objects)
                for k in range(maps.shape[1]):
                    peak = centres[int(np.argmax(maps[c, k]))]
                    hits.add(cam, k, nearest_kind(peak, objects),
                             float(np.linalg.norm(objects["named cube"][0] - peak)),
                             float(np.linalg.norm(objects["named pad"][0] - peak)))
    finally:
        env.close()
    if hits is None:
        raise ValueError("no scenes given; pass at least one seed")
    return hits
