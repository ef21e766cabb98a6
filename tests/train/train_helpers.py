"""Small policies and training configs that keep the training tests to seconds on a 2-core CPU."""

from __future__ import annotations

from typing import Any

import torch

from vla.config import TrainConfig
from vla.data import FrameStore, compute_stats
from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
from vla.policy import VLAPolicy
from vla.tokenizer import build_vocab

CHUNK = 4


def small_policy_config(**backbone: Any) -> PolicyConfig:
    # Dropout and augmentation stay on: they draw random numbers, which is what resume must replay.
    base = dict(d_model=32, n_layers=1, n_heads=2, stem_channels=[8], patch_size=4, patch_stride=4, d_vision=32,
                vision_layers=1, vision_heads=2, dropout=0.1)
    return PolicyConfig(backbone=BackboneConfig(**{**base, **backbone}),
                        head=HeadConfig(chunk_size=CHUNK, n_action_steps=2, n_layers=1, n_heads=2))


def make_policy(store: FrameStore, seed: int = 0, **backbone: Any) -> VLAPolicy:
    torch.manual_seed(seed)
    stats = compute_stats(store.state, store.action, store.spec)
    return VLAPolicy(small_policy_config(**backbone), store.spec, build_vocab(store.tasks), stats)


def train_config(**overrides: Any) -> TrainConfig:
    base = dict(steps=4, batch_size=8, lr=1e-3, warmup_steps=1, log_every=1, save_every=2, val_every=0,
                eval_every=0, amp=False)
    return TrainConfig(**{**base, **overrides})
