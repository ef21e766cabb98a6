"""The pretrained (Idefics3 / SmolVLM) backbone, exercised with a tiny random model saved to a local folder."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import CHUNK, SPEC, VOCAB, make_batch, make_stats, overfit, repeat_batch
from safetensors.torch import load_file, save_file

from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
from vla.policy import VLAPolicy


def hf_config(path: str, head: str = "l1", **backbone) -> PolicyConfig:
    aug = dict(aug_shift_pad=0, aug_brightness=0.0, aug_contrast=0.0)
    return PolicyConfig(
        backbone=BackboneConfig(kind="hf", path=path, **{**aug, **backbone}),
        head=HeadConfig(kind=head, chunk_size=CHUNK, n_action_steps=2, n_layers=1, num_steps=4),
    )


def build(path: str, head: str = "l1", **backbone) -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(hf_config(path, head, **backbone), SPEC, VOCAB, make_stats())


@pytest.mark.parametrize("head", ["l1", "flow"])
@pytest.mark.parametrize("order", ["image_first", "text_first"])
def test_hf_trains_and_predicts(tiny_vlm_path: str, head: str, order: str) -> None:
    policy = build(tiny_vlm_path, head, token_order=order, freeze_vision=False)
    batch = make_batch(4)
    loss, _ = policy(batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)
    policy.zero_grad()
    train_batch = batch if head == "l1" else repeat_batch(batch, 4)
    first, last = overfit(policy, train_batch, steps=60 if head == "l1" else 100)
    assert last < 0.5 * first, f"loss did not halve: {first:.3f} -> {last:.3f}"
    policy.eval()
    assert policy.predict_chunk(batch).shape == (4, CHUNK, SPEC.action_dim)
    if head == "flow":
        assert policy.predict_chunk(batch, n_samples=2).shape == (4, 2, CHUNK, SPEC.action_dim)


def test_hf_round_trip_through_the_local_folder(tiny_vlm_path: str, tmp_path) -> None:
    policy = build(tiny_vlm_path, "flow", lora_r=4)
    # Change every weight so that the round trip must carry them (not just reload the folder).
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    clone = VLAPolicy.from_metadata(json.loads(json.dumps(policy.metadata())))
    save_file(policy.state_dict(), tmp_path / "model.safetensors")
    clone.load_state_dict(load_file(tmp_path / "model.safetensors"))
    batch = make_batch(2)
    batch["task"] = ["pick up the PURPLE cube", "put it in the bowl please"]  # unknown words
    a = policy.eval().predict_chunk(batch, generator=torch.Generator().manual_seed(0))
    b = clone.eval().predict_chunk(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)


def test_prefix_is_computed_once(tiny_vlm_path: str) -> None:
    policy = build(tiny_vlm_path, "flow").eval()
    calls = []
    policy.backbone.vlm.text_model.register_forward_hook(lambda *_: calls.append(1))
    policy.predict_chunk(make_batch(2), n_samples=3, num_steps=4)
    assert calls == [1]


def _trainable(policy: VLAPolicy, prefix: str) -> set[bool]:
    return {p.requires_grad for n, p in policy.named_parameters() if n.startswith(prefix)}


def test_freezing_options(tiny_vlm_path: str) -> None:
    frozen = build(tiny_vlm_path, freeze_vision=True, train_top_k_layers=1)
    assert _trainable(frozen, "backbone.vlm.vision_model") == {False}
    assert _trainable(frozen, "backbone.vlm.connector") == {True}
    assert _trainable(frozen, "backbone.vlm.text_model.layers.0.") == {False}
    assert _trainable(frozen, "backbone.vlm.text_model.layers.1.") == {True}
    assert _trainable(frozen, "backbone.state_proj") == {True}
    none = build(tiny_vlm_path, train_top_k_layers=0)
    assert _trainable(none, "backbone.vlm.text_model") == {False}
    full = build(tiny_vlm_path, freeze_vision=False)
    assert full.num_parameters(trainable_only=True) == full.num_parameters()


def test_lora_trains_adapters_only(tiny_vlm_path: str) -> None:
    policy = build(tiny_vlm_path, lora_r=4)
    names = [n for n, p in policy.named_parameters() if p.requires_grad and n.startswith("backbone.vlm.text_model")]
    assert names and all("lora_" in n for n in names)
    loss, _ = policy(make_batch(2))
    loss.backward()
    assert all(policy.get_parameter(n).grad is not None for n in names)


def test_hf_config_errors(tmp_path, tiny_vlm_path: str) -> None:
    with pytest.raises(ValueError, match=r"config\.json"):
        build(str(tmp_path))
    with pytest.raises(ValueError, match="train_top_k_layers"):
        build(tiny_vlm_path, train_top_k_layers=7)


def test_hf_padding_does_not_change_a_sample(tiny_vlm_path: str) -> None:
    policy = build(tiny_vlm_path).eval()
    batch = make_batch(2)
    batch["task"] = ["pick up the red cube", "put the green cube in the bowl and then pick up the blue cube"]
    batched, single = policy.encode(batch), policy.encode({k: v[:1] for k, v in batch.items()})
    torch.testing.assert_close(batched.hidden[0][batched.mask[0]], single.hidden[0], atol=1e-5, rtol=1e-5)
