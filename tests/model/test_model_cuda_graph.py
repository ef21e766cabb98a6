"""CUDA-graph inference (vla/cuda_graph.py) and the capture-safe paths it relies on.

The CPU tests check what the graph feeds the policy (pre-tokenized, padded instructions; index-tensor
relative offsets; the l1 head's gripper threshold) gives the eager outputs; the CUDA tests replay real
graphs against eager ``predict_chunk`` and are skipped on a machine without a GPU.
"""

from __future__ import annotations

import pytest
import torch
from model_helpers import SPEC, VOCAB, make_batch, make_stats, policy_config, scratch_backbone

from vla.backbones import TextTokens
from vla.cuda_graph import CudaGraphPolicy
from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
from vla.policy import VLAPolicy
from vla.processing.relative import relative_pairs, to_absolute
from vla.types import FeatureSpec

NAMED_SPEC = FeatureSpec(
    cameras=("front", "wrist"),
    image_shape=(3, 32, 32),
    state_dim=4,
    action_dim=4,
    gripper_dims=(3,),
    state_names=("j0", "j1", "j2", "gripper"),
    action_names=("j0.target", "j1.target", "j2.target", "gripper"),
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _policy(
    head: str = "l1", spec: FeatureSpec = SPEC, relative: bool = False, device: str = "cpu", **backbone
) -> VLAPolicy:
    torch.manual_seed(0)
    cfg = policy_config(head, backbone=scratch_backbone(**backbone), relative_actions=relative)
    return VLAPolicy(cfg, spec, VOCAB, make_stats(spec)).to(device).eval()


def _on(batch: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@pytest.mark.parametrize("backbone", [{}, {"grounding_slots": 2, "token_order": "text_first", "vision_film": True}])
def test_padded_text_tokens_give_the_string_path_output(backbone: dict) -> None:
    policy = _policy(**backbone)
    batch = make_batch(batch_size=3)
    expected = policy.predict_chunk(batch)
    tokens = policy.backbone.tokenize(batch["task"], policy.backbone.max_text_tokens)
    assert tokens.ids.shape == (3, policy.backbone.max_text_tokens)
    assert not tokens.valid[:, -1].any()  # padded past every instruction
    got = policy.predict_chunk({**batch, "task": tokens})
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_tokenize_refuses_a_length_shorter_than_the_instruction() -> None:
    policy = _policy()
    with pytest.raises(ValueError, match="shorter than the tokenized instructions"):
        policy.backbone.tokenize(["put the green cube in the bowl"], 3)


def test_text_tokens_of_the_wrong_batch_size_are_refused() -> None:
    policy = _policy()
    batch = make_batch(batch_size=2)
    tokens = policy.backbone.tokenize(["pick up the red cube"] * 3)
    with pytest.raises(ValueError, match="3 instructions for a batch of 2"):
        policy.predict_chunk({**batch, "task": tokens})


def test_relative_offsets_by_index_tensors_match_list_indexing() -> None:
    pairs = relative_pairs(NAMED_SPEC)
    gen = torch.Generator().manual_seed(0)
    actions, state = torch.randn(2, 5, 4, generator=gen), torch.randn(2, 4, generator=gen)
    tensors = (torch.tensor(pairs[0]), torch.tensor(pairs[1]))
    torch.testing.assert_close(to_absolute(actions, state, tensors), to_absolute(actions, state, pairs))
    sampled = torch.randn(2, 3, 5, 4, generator=gen)  # with a sample axis
    torch.testing.assert_close(to_absolute(sampled, state, tensors), to_absolute(sampled, state, pairs))


def test_l1_gripper_dims_are_binary_and_continuous_dims_untouched() -> None:
    policy = _policy()
    batch = make_batch(batch_size=2)
    prefix = policy.encode(batch)
    raw = policy.head._decode(prefix)
    chunk = policy.head.sample(prefix)[:, 0]
    grip = policy.head.gripper
    assert set(chunk[..., grip].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(chunk[..., grip], (raw[..., grip] > 0).float())
    torch.testing.assert_close(chunk[..., ~grip], raw[..., ~grip])


def test_capture_refuses_a_cpu_policy() -> None:
    policy = _policy()
    with pytest.raises(ValueError, match="needs the policy on a CUDA device"):
        CudaGraphPolicy(policy, make_batch(batch_size=1))


def test_hf_backbone_refuses_pre_tokenized_instructions(tiny_vlm_path: str) -> None:
    cfg = PolicyConfig(
        backbone=BackboneConfig(kind="hf", path=tiny_vlm_path),
        head=HeadConfig(chunk_size=4, n_action_steps=2, n_layers=1),
    )
    policy = VLAPolicy(cfg, SPEC, VOCAB, make_stats()).eval()
    batch = make_batch(batch_size=1)
    tokens = TextTokens(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="need the from-scratch backbone"):
        policy.predict_chunk({**batch, "task": tokens})


# ------------------------------------------------------------------------------------------- CUDA
@cuda
@pytest.mark.parametrize(
    "relative, backbone",
    [(False, {}), (True, {}), (True, {"grounding_slots": 2, "token_order": "text_first", "vision_film": True})],
)
def test_graph_replays_match_eager_chunks(relative: bool, backbone: dict) -> None:
    spec = NAMED_SPEC if relative else SPEC
    policy = _policy("l1", spec, relative=relative, device="cuda", **backbone)
    with pytest.raises(ValueError, match=r"policy\.eval"):
        CudaGraphPolicy(policy.train(), _on(make_batch(1, spec), "cuda"))
    policy.eval()
    graphed = CudaGraphPolicy(policy, _on(make_batch(1, spec, seed=0), "cuda"))
    for seed in (1, 2, 0):  # new observations, and back: every replay reads the inputs copied in
        batch = _on(make_batch(1, spec, seed=seed), "cuda")
        batch["task"] = [["pick up the red cube", "put the green cube in the bowl"][seed % 2]]
        torch.testing.assert_close(graphed.predict_chunk(batch), policy.predict_chunk(batch), rtol=1e-4, atol=1e-4)
    host = make_batch(1, spec, seed=3)  # host tensors are copied in too
    torch.testing.assert_close(
        graphed.predict_chunk(host), policy.predict_chunk(_on(host, "cuda")), rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match="capture another CudaGraphPolicy"):
        graphed.predict_chunk(_on(make_batch(2, spec), "cuda"))


@cuda
def test_flow_graph_draws_fresh_noise_per_replay() -> None:
    policy = _policy("flow", device="cuda")
    batch = _on(make_batch(1), "cuda")
    graphed = CudaGraphPolicy(policy, batch, n_samples=4)
    first, second = graphed.predict_chunk(batch), graphed.predict_chunk(batch)
    assert first.shape == (1, 4, *policy.predict_chunk(batch).shape[1:])
    assert not torch.equal(first, second)
    assert torch.isfinite(first).all()
    # The same integration with the same noise: eager sampling from a fixed generator state matches
    # a replay that starts from that state.
    torch.cuda.manual_seed(7)
    replayed = graphed.predict_chunk(batch)
    torch.cuda.manual_seed(7)
    eager = policy.predict_chunk(batch, n_samples=4)
    torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-4)


@cuda
def test_bf16_graph_stays_close_to_fp32() -> None:
    policy = _policy("l1", device="cuda")
    batch = _on(make_batch(1), "cuda")
    reference = policy.predict_chunk(batch)
    graphed = CudaGraphPolicy(policy, batch, bf16=True)
    got = graphed.predict_chunk(batch)
    grip = policy.head.gripper
    assert (got[..., ~grip] - reference[..., ~grip]).abs().max() < 0.1 * reference[..., ~grip].abs().max()
