"""Grounding-slot hits: cell centres, peak assignment, and the counting loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.config import EnvConfig, make_env
from vla.backbones.grounding import cell_centres
from vla.eval.rollout import env_feature_spec
from vla.eval.slot_hits import KINDS, grounding_hits, nearest_kind
from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
from vla.policy import VLAPolicy
from vla.tokenizer import build_vocab


def test_cell_centres_follow_the_stem_stride() -> None:
    centres = cell_centres(16, 16, 64)
    assert centres.shape == (256, 2)
    np.testing.assert_allclose(centres[0], [0.5, 0.5])
    np.testing.assert_allclose(centres[16 * 2 + 3], [3 * 4 + 0.5, 2 * 4 + 0.5])  # row 2, column 3


def test_nearest_kind_picks_the_closest_visible_object() -> None:
    objects = {"named cube": np.array([[10.0, 10.0]]), "named pad": np.array([[40.0, 40.0]]),
               "other cube": np.array([[12.0, 30.0], [50.0, 5.0]]), "other pad": np.zeros((0, 2))}
    assert nearest_kind(np.array([11.0, 11.0]), objects) == "named cube"
    assert nearest_kind(np.array([13.0, 28.0]), objects) == "other cube"
    assert nearest_kind(np.array([39.0, 44.0]), objects) == "named pad"
    with pytest.raises(ValueError, match="no object is visible"):
        nearest_kind(np.zeros(2), {k: np.zeros((0, 2)) for k in KINDS})


def test_grounding_hits_count_every_slot_and_camera_once_per_scene() -> None:
    env_cfg = EnvConfig(task="pick_place", image_size=32)
    env = make_env(env_cfg)
    spec = env_feature_spec(env)
    env.close()
    backbone = BackboneConfig(d_model=16, n_layers=1, n_heads=2, stem_channels=[4, 8], patch_size=2, patch_stride=2,
                              d_vision=16, vision_layers=1, vision_heads=2, grounding_slots=2)
    stats = {k: {"mean": torch.zeros(7), "std": torch.ones(7), "min": -torch.ones(7), "max": torch.ones(7)}
             for k in ("observation.state", "action")}
    torch.manual_seed(0)
    policy = VLAPolicy(PolicyConfig(backbone, HeadConfig(chunk_size=2, n_action_steps=1, n_layers=1, n_heads=2)),
                       spec, build_vocab(["put the red cube on the blue pad"]), stats)
    seeds = range(100_000, 100_004)
    hits = grounding_hits(policy, env_cfg, seeds)
    assert hits.cameras == ("front", "wrist") and hits.n_slots == 2
    front = [hits.scenes("front", k) for k in range(2)]
    assert front == [4, 4], "the front camera sees both named objects in every scene"
    for (cam, k), counts in hits.counts.items():
        assert set(counts) == set(KINDS) and sum(counts.values()) == len(hits.dist_cube[(cam, k)])
        assert all(d >= 0 for d in hits.dist_cube[(cam, k)] + hits.dist_pad[(cam, k)])
    np.testing.assert_allclose(sum(hits.cell_share["front"].values()), 4.0)  # shares sum to 1 per scene
    again = grounding_hits(policy, env_cfg, seeds)
    assert again.counts == hits.counts, "the same scenes and weights give the same peaks"
