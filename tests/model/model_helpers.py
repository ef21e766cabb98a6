"""Builders shared by the model tests: a 2-camera feature spec, stats, batches, small configs, a tiny VLM folder."""

from __future__ import annotations

from pathlib import Path

import torch

from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
from vla.types import FeatureSpec

SPEC = FeatureSpec(cameras=("front", "wrist"), image_shape=(3, 32, 32), state_dim=7, action_dim=7, gripper_dims=(6,))
VOCAB = ["pick", "up", "the", "red", "green", "blue", "cube", "put", "in", "bowl"]
TASKS = ["pick up the red cube", "put the green cube in the bowl", "pick up the blue cube", "put the red cube"]
CHUNK = 4


def make_stats(spec: FeatureSpec = SPEC) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    stats = {}
    for key, dim in (("observation.state", spec.state_dim), ("action", spec.action_dim)):
        mean = torch.randn(dim, generator=gen) * 0.3
        std = torch.rand(dim, generator=gen) + 0.5
        stats[key] = {"mean": mean, "std": std, "min": mean - 2 * std, "max": mean + 2 * std}
    return stats


def make_batch(batch_size: int = 4, spec: FeatureSpec = SPEC, chunk: int = CHUNK, seed: int = 0) -> dict:
    """Random frames whose action chunks differ per sample, gripper dims binary, last step padded."""
    gen = torch.Generator().manual_seed(seed)
    batch = {key: torch.rand(batch_size, *spec.image_shape, generator=gen) for key in spec.image_keys()}
    batch["observation.state"] = torch.randn(batch_size, spec.state_dim, generator=gen)
    actions = torch.randn(batch_size, chunk, spec.action_dim, generator=gen)
    for d in spec.gripper_dims:
        actions[..., d] = (torch.rand(batch_size, chunk, generator=gen) > 0.5).float()
    batch["action"] = actions
    is_pad = torch.zeros(batch_size, chunk, dtype=torch.bool)
    is_pad[0, -1] = True
    batch["action_is_pad"] = is_pad
    batch["task"] = [TASKS[i % len(TASKS)] for i in range(batch_size)]
    return batch


def scratch_backbone(**overrides) -> BackboneConfig:
    """A smaller-than-tiny scratch backbone so that the many test configurations stay fast."""
    base = dict(
        d_model=64,
        n_layers=2,
        n_heads=4,
        stem_channels=[16],
        patch_size=4,
        patch_stride=4,
        d_vision=64,
        vision_layers=1,
        vision_heads=4,
        cross_every=1,
        aug_shift_pad=0,
        aug_brightness=0.0,
        aug_contrast=0.0,
    )
    return BackboneConfig(**{**base, **overrides})


def head_config(kind: str, **overrides) -> HeadConfig:
    base = dict(kind=kind, chunk_size=CHUNK, n_action_steps=2, n_layers=1, num_steps=4)
    return HeadConfig(**{**base, **overrides})


def policy_config(head: str = "l1", backbone: BackboneConfig | None = None, **head_overrides) -> PolicyConfig:
    return PolicyConfig(backbone=backbone or scratch_backbone(), head=head_config(head, **head_overrides))


def write_tiny_idefics3(folder: Path) -> None:
    """A randomly initialised Idefics3 with a word-level tokenizer, saved like a downloaded checkpoint."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.idefics3 import Idefics3ImageProcessor

    specials = ["<pad>", "<unk>", "<s>", "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]
    vocab = {w: i for i, w in enumerate(specials + VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>")
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    # 32 px / patch 8 = 4x4 patches, pixel shuffle by 2 -> 4 image tokens per camera.
    Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4).save_pretrained(folder)
    config = Idefics3Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=dict(
            model_type="llama",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(vocab),
            pad_token_id=0,
            bos_token_id=2,
        ),
        scale_factor=2,
        image_token_id=vocab["<image>"],
    )
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).save_pretrained(folder)


def repeat_batch(batch: dict, times: int) -> dict:
    """The same frames ``times`` over: a flow loss then sees several noise levels of each frame per step."""
    return {k: v.repeat(times, *[1] * (v.ndim - 1)) if torch.is_tensor(v) else v * times for k, v in batch.items()}


def overfit(policy: torch.nn.Module, batch: dict, steps: int, lr: float = 3e-3, seed: int = 0) -> tuple[float, float]:
    """Train on one fixed batch; return (initial loss, mean of the last 10 losses) — the mean tames flow noise."""
    torch.manual_seed(seed)
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss, _ = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], sum(losses[-10:]) / 10
