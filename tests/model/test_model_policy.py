"""The policy contract: action queue, metadata round trip, prefix reuse, masks and input checks."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import CHUNK, SPEC, VOCAB, make_batch, make_stats, policy_config, scratch_backbone
from safetensors.torch import load_file, save_file

from vla.policy import VLAPolicy


def build(head: str = "l1", **backbone) -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(policy_config(head, scratch_backbone(**backbone)), SPEC, VOCAB, make_stats()).eval()


def test_select_action_pops_a_queue_refilled_every_n_action_steps() -> None:
    policy = build("l1")  # n_action_steps = 2
    batch = make_batch(3)
    calls = []
    policy.backbone.register_forward_hook(lambda *_: calls.append(1))
    chunk = policy.predict_chunk(batch)
    calls.clear()
    first, second = policy.select_action(batch), policy.select_action(batch)
    assert len(calls) == 1
    torch.testing.assert_close(first, chunk[:, 0])
    torch.testing.assert_close(second, chunk[:, 1])
    assert first.shape == (3, SPEC.action_dim)
    policy.select_action(batch)
    assert len(calls) == 2, "a new chunk is predicted once the queue is empty"
    policy.reset()
    torch.testing.assert_close(policy.select_action(batch), chunk[:, 0])
    assert len(calls) == 3, "reset drops the queued actions"


@pytest.mark.parametrize("head", ["l1", "flow"])
def test_metadata_round_trip_gives_identical_outputs(head: str, tmp_path) -> None:
    policy = build(head, fusion="cross")
    meta = json.loads(json.dumps(policy.metadata()))  # must survive JSON
    clone = VLAPolicy.from_metadata(meta).eval()
    assert not torch.equal(clone.normalizer.action_mean, policy.normalizer.action_mean)
    save_file(policy.state_dict(), tmp_path / "model.safetensors")  # checkpoints are safetensors
    clone.load_state_dict(load_file(tmp_path / "model.safetensors"))
    batch = make_batch(2)
    kw = {} if head == "l1" else {"n_samples": 3}
    a = policy.predict_chunk(batch, generator=torch.Generator().manual_seed(5), **kw)
    b = clone.predict_chunk(batch, generator=torch.Generator().manual_seed(5), **kw)
    torch.testing.assert_close(a, b)
    assert clone.num_parameters() == policy.num_parameters()


def test_metadata_is_checked() -> None:
    with pytest.raises(ValueError, match="vocab"):
        VLAPolicy.from_metadata({"cfg": {}, "spec": SPEC.to_dict()})
    meta = build().metadata() | {"format_version": 99}
    with pytest.raises(ValueError, match="format_version"):
        VLAPolicy.from_metadata(meta)


def test_unknown_words_are_accepted() -> None:
    policy = build()
    batch = make_batch(2)
    batch["task"] = ["Fetch the ultramarine dodecahedron!", ""]
    assert torch.isfinite(policy.predict_chunk(batch)).all()


def test_flow_head_runs_the_backbone_once_for_all_steps_and_samples() -> None:
    policy = build("flow")
    backbone_calls, head_rows = [], []
    policy.backbone.register_forward_hook(lambda *_: backbone_calls.append(1))
    policy.head.out.register_forward_hook(lambda _m, _i, out: head_rows.append(out.shape[0]))
    chunks = policy.predict_chunk(make_batch(2), n_samples=3, num_steps=5)
    assert chunks.shape == (2, 3, CHUNK, SPEC.action_dim)
    assert len(backbone_calls) == 1
    assert head_rows == [6] * 5, "one batched head pass per Euler step over all samples"
    assert not torch.allclose(chunks[:, 0], chunks[:, 1]), "samples come from different noise"
    assert set(chunks[..., 6].unique().tolist()) <= {0.0, 1.0}


def test_precomputed_prefix_skips_the_backbone() -> None:
    policy = build("flow")
    batch = make_batch(2)
    prefix = policy.encode(batch)
    calls = []
    policy.backbone.register_forward_hook(lambda *_: calls.append(1))
    gen = torch.Generator().manual_seed(0)
    out = policy.predict_chunk(batch, prefix=prefix, generator=gen)
    assert calls == [] and out.shape == (2, CHUNK, SPEC.action_dim)


def test_l1_head_refuses_several_samples() -> None:
    policy = build("l1")
    assert not policy.stochastic and build("flow").stochastic
    with pytest.raises(ValueError, match="stochastic"):
        policy.predict_chunk(make_batch(1), n_samples=2)


@pytest.mark.parametrize("order", ["image_first", "text_first"])
def test_padding_does_not_change_a_sample(order: str) -> None:
    """A frame's chunk is the same alone or batched with a longer instruction (masks + position ids)."""
    policy = build("l1", token_order=order)
    batch = make_batch(2)
    batch["task"] = ["pick up the red cube", "put the green cube in the bowl and then pick up the blue cube"]
    alone = {k: v[:1] for k, v in batch.items()}
    batched, single = policy.encode(batch), policy.encode(alone)
    real = batched.hidden[0][batched.mask[0]]
    assert real.shape == single.hidden[0].shape
    torch.testing.assert_close(real, single.hidden[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(policy.predict_chunk(batch)[:1], policy.predict_chunk(alone), atol=1e-5, rtol=1e-5)


def test_causal_order_decides_what_sees_the_instruction() -> None:
    batch = make_batch(1)
    other = dict(batch, task=["put the blue cube in the bowl"])
    image_first = build("l1", token_order="image_first")
    n_vis = image_first.backbone.n_visual
    a, b = image_first.encode(batch).hidden, image_first.encode(other).hidden
    torch.testing.assert_close(a[:, :n_vis], b[:, :n_vis])  # image tokens come first: they cannot see text
    assert not torch.allclose(a[:, -1], b[:, -1])  # the state token sees both
    text_first = build("l1", token_order="text_first")
    a, b = text_first.encode(batch).hidden, text_first.encode(other).hidden
    assert not torch.allclose(a[:, -1 - n_vis : -1], b[:, -1 - n_vis : -1])  # image tokens now read the text


def test_backbone_output_masks_instruction_padding() -> None:
    policy = build()
    batch = make_batch(2)
    batch["task"] = ["pick", "pick up the red cube"]
    out = policy.encode(batch)
    n_vis = policy.backbone.n_visual
    assert out.hidden.shape[:2] == out.mask.shape == (2, n_vis + 6 + 1)
    assert out.mask[0].tolist() == [True] * (n_vis + 2) + [False] * 4 + [True]
    assert out.mask[1].all()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("observation.images.wrist"), "observation.images.wrist"),
        (lambda b: b.__setitem__("observation.images.front", torch.rand(2, 3, 16, 16)), "observation.images.front"),
        (lambda b: b.__setitem__("observation.state", torch.rand(2, 5)), "observation.state"),
        (lambda b: b.__setitem__("action", torch.rand(2, CHUNK + 1, 7)), "chunk_size"),
        (lambda b: b.__setitem__("task", ["only one"]), "task"),
    ],
)
def test_bad_batches_are_explained(mutate, message: str) -> None:
    policy = build()
    batch = make_batch(2)
    mutate(batch)
    with pytest.raises(ValueError, match=message):
        policy(batch)


def test_stats_round_trip_through_the_state_dict() -> None:
    policy = build()
    state = policy.state_dict()
    assert torch.equal(state["normalizer.action_std"], make_stats()["action"]["std"])
    assert policy.num_parameters(trainable_only=True) == policy.num_parameters()
