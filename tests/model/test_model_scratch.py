"""The from-scratch backbone across heads x fusion x token order: builds, trains, overfits, predicts."""

from __future__ import annotations

import pytest
import torch
from model_helpers import (
    CHUNK,
    SPEC,
    VOCAB,
    make_batch,
    make_stats,
    overfit,
    policy_config,
    repeat_batch,
    scratch_backbone,
)

from vla.backbones.grounding import GroundingAttention, pixels_to_cell, soft_argmax
from vla.model_config import HeadConfig, PolicyConfig, backbone_preset
from vla.policy import VLAPolicy
from vla.types import FeatureSpec

# Cross fusion keeps the image out of the LM stream, so token_order has no effect there
# (test_cross_fusion_ignores_token_order); one cross layout covers both orders.
LAYOUTS = [
    dict(fusion="early", token_order="image_first"),
    dict(fusion="early", token_order="text_first"),
    dict(fusion="cross", token_order="image_first"),
    dict(fusion="early", token_order="image_first", vision_film=True),
    dict(fusion="early", token_order="text_first", grounding_slots=2),
    dict(fusion="cross", token_order="image_first", grounding_slots=2),
]
LAYOUT_IDS = ["early-image_first", "early-text_first", "cross", "early-film", "early-grounding", "cross-grounding"]


def build(head: str, **backbone) -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(policy_config(head, scratch_backbone(**backbone)), SPEC, VOCAB, make_stats())


@pytest.mark.parametrize("head", ["l1", "flow"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
def test_forward_backward_and_overfit(head: str, layout: dict) -> None:
    policy = build(head, **layout)
    batch = make_batch(4)
    loss, terms = policy(batch)
    assert torch.isfinite(loss) and terms["loss"] == pytest.approx(loss.item())
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "every parameter gets a finite gradient"
    policy.zero_grad()
    # 4 distinct frames; the flow head sees each 4 times per step (several noise levels), which it needs
    # to fit in a test-sized number of steps.
    train_batch = batch if head == "l1" else repeat_batch(batch, 4)
    # FiLM's multiplicative modulation makes the first steps at the test's high lr noisier: 100 steps too.
    steps = 60 if head == "l1" and not layout.get("vision_film") else 100
    first, last = overfit(policy, train_batch, steps=steps)
    assert last < 0.5 * first, f"loss did not halve: {first:.3f} -> {last:.3f}"

    policy.eval()
    chunk = policy.predict_chunk(batch)
    assert chunk.shape == (4, CHUNK, SPEC.action_dim) and torch.isfinite(chunk).all()
    assert set(chunk[..., 6].unique().tolist()) <= {0.0, 1.0}


def test_l1_overfit_reaches_the_targets() -> None:
    policy = build("l1")
    batch = make_batch(4)
    overfit(policy, batch, steps=100)
    policy.eval()
    pred = policy.predict_chunk(batch)
    real = ~batch["action_is_pad"]
    err = (pred[..., :6] - batch["action"][..., :6]).abs()[real].mean()
    spread = batch["action"][..., :6].std()
    assert err < 0.3 * spread
    assert (pred[..., 6] == batch["action"][..., 6])[real].float().mean() > 0.9


def test_flow_overfit_samples_reach_the_targets() -> None:
    """A falling flow-matching loss is not enough: the integrated samples must land on the chunks trained on
    (a wrong sign in the velocity target or the integration direction would still let the loss fall)."""
    policy = build("flow")
    batch = make_batch(4)
    overfit(policy, repeat_batch(batch, 4), steps=200)
    policy.eval()
    torch.manual_seed(1)
    pred = policy.predict_chunk(batch)
    real = ~batch["action_is_pad"]
    err = (pred[..., :6] - batch["action"][..., :6]).abs()[real].mean()
    assert err < 0.3 * batch["action"][..., :6].std()
    assert (pred[..., 6] == batch["action"][..., 6])[real].float().mean() > 0.9


@pytest.mark.parametrize("target", ["noise_minus_action", "action_minus_noise"])
@pytest.mark.parametrize("sampling", ["beta", "uniform"])
def test_flow_variants_train(target: str, sampling: str) -> None:
    torch.manual_seed(0)
    cfg = policy_config("flow", flow_target=target, time_sampling=sampling)
    policy = VLAPolicy(cfg, SPEC, VOCAB, make_stats())
    first, last = overfit(policy, repeat_batch(make_batch(4), 4), steps=40)
    assert last < 0.8 * first


def test_cross_fusion_ignores_token_order() -> None:
    a, b = build("l1", fusion="cross", token_order="image_first"), build("l1", fusion="cross", token_order="text_first")
    b.load_state_dict(a.state_dict())
    batch = make_batch(3)
    torch.testing.assert_close(a.eval().predict_chunk(batch), b.eval().predict_chunk(batch))


def test_film_starts_as_the_unconditioned_encoder() -> None:
    plain, film = build("l1"), build("l1", vision_film=True)
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all("instruction_encoder" in k or ".film." in k for k in missing)
    batch = make_batch(3)
    torch.testing.assert_close(film.eval().predict_chunk(batch), plain.eval().predict_chunk(batch))


def _visual_hidden(policy: VLAPolicy, batch: dict) -> torch.Tensor:
    # Image-first early fusion: the visual tokens lead the LM stream.
    return policy.encode(batch).hidden[:, : policy.backbone.n_visual]


def test_film_lets_the_instruction_reach_the_visual_tokens() -> None:
    batch = make_batch(2)
    swapped = {**batch, "task": ["put the blue cube on the red pad", "put the red cube on the blue pad"]}
    # Causal image-first fusion: without FiLM the visual tokens cannot see the instruction at all.
    plain = build("l1").eval()
    torch.testing.assert_close(_visual_hidden(plain, batch), _visual_hidden(plain, swapped))
    film = build("l1", vision_film=True)
    with torch.no_grad():
        for head in film.backbone.film.heads:  # leave the identity start, as training does
            head.weight.normal_(std=0.1)
    film.eval()
    assert not torch.allclose(_visual_hidden(film, batch), _visual_hidden(film, swapped), atol=1e-4)


def test_instruction_summary_tells_word_order_apart() -> None:
    # Same bag of words, different roles: a mean of word embeddings could not tell these apart.
    backbone = build("l1", vision_film=True).backbone.eval()
    ids, valid = backbone.tokenizer.encode_batch(
        ["put the red cube on the blue pad", "put the blue cube on the red pad"], backbone.cfg.max_text_len
    )
    summary = backbone.instruction_encoder(backbone.token_embed(ids), valid)
    assert not torch.allclose(summary[0], summary[1], atol=1e-3)


def test_learned_positions_and_gelu_mlp_train() -> None:
    policy = build("l1", pos_encoding="learned", mlp="gelu")
    first, last = overfit(policy, make_batch(4), steps=40)
    assert last < first


def test_augmentation_runs_only_in_training() -> None:
    torch.manual_seed(0)
    cfg = policy_config("l1", scratch_backbone(aug_shift_pad=2, aug_brightness=0.3, aug_contrast=0.3))
    policy = VLAPolicy(cfg, SPEC, VOCAB, make_stats())
    batch = make_batch(2)
    policy.train()
    a, b = policy.encode(batch).hidden, policy.encode(batch).hidden
    assert not torch.allclose(a, b)
    policy.eval()
    torch.testing.assert_close(policy.encode(batch).hidden, policy.encode(batch).hidden)


def test_presets_sizes_and_patch_tokens() -> None:
    spec = FeatureSpec(
        cameras=("front", "wrist"), image_shape=(3, 96, 96), state_dim=7, action_dim=7, gripper_dims=(6,)
    )
    tiny = VLAPolicy(PolicyConfig(backbone_preset("tiny"), HeadConfig()), spec, VOCAB, make_stats())
    assert tiny.backbone.vision.num_patches == 36
    assert 1_000_000 <= tiny.num_parameters() <= 3_000_000
    small = VLAPolicy(PolicyConfig(backbone_preset("small"), HeadConfig()), spec, VOCAB, make_stats())
    assert small.backbone.vision.num_patches == 36
    assert 15_000_000 <= small.num_parameters() <= 40_000_000


def test_soft_argmax_finds_a_peaked_map_and_centres_a_flat_one() -> None:
    h, w = 5, 8
    peaked = torch.zeros(1, h * w)
    peaked[0, 2 * w + 6] = 1.0  # row 2, column 6
    mean, spread = soft_argmax(peaked, h, w)
    torch.testing.assert_close(mean, torch.tensor([[-1.0 + 2 * 6 / (w - 1), 0.0]]))
    assert spread.max() < 1e-2
    mean, spread = soft_argmax(torch.full((1, h * w), 1.0 / (h * w)), h, w)
    torch.testing.assert_close(mean, torch.zeros(1, 2), atol=1e-6, rtol=0)
    assert (spread > 0.5).all()


def test_grounding_attends_to_the_pixels_its_query_matches() -> None:
    # Two one-hot "colours" at two places of an 8x8 feature map; a query along colour 0 must put its
    # attention on colour 0's pixel, one along colour 1 on the other.
    grounding = GroundingAttention(d_model=8, feat_channels=2, n_slots=1, n_cameras=1, d_key=2)
    with torch.no_grad():
        grounding.pixel_key.weight.copy_(torch.eye(2)[:, :, None, None])
        grounding.pixel_key.bias.zero_()
    features = torch.zeros(1, 2, 8, 8)
    features[0, 0, 1, 2] = 1.0
    features[0, 1, 6, 5] = 1.0
    for colour, (row, col) in ((0, (1, 2)), (1, (6, 5))):
        query = torch.zeros(1, 1, 2)
        query[0, 0, colour] = 40.0
        maps = grounding.attention_maps(features, query)
        assert maps.shape == (1, 1, 64) and maps[0, 0].argmax().item() == row * 8 + col
        assert maps[0, 0, row * 8 + col] > 0.9


def test_grounding_tokens_follow_the_instruction() -> None:
    policy = build("l1", grounding_slots=2).eval()
    backbone = policy.backbone
    batch = make_batch(2)
    swapped = {**batch, "task": ["put the blue cube on the red pad", "put the red cube on the blue pad"]}
    n = backbone.n_grounding
    assert n == 2 * len(SPEC.cameras)

    def grounding_tokens(b: dict) -> torch.Tensor:
        hidden = policy.encode(b).hidden
        return hidden[:, -1 - n : -1]  # just before the state token

    assert policy.encode(batch).hidden.shape[1] == backbone.n_visual + n + 1 + batch_text_len(backbone, batch)
    assert not torch.allclose(grounding_tokens(batch), grounding_tokens(swapped), atol=1e-4)


def batch_text_len(backbone, batch: dict) -> int:
    ids, _ = backbone.tokenizer.encode_batch(batch["task"], backbone.cfg.max_text_len)
    return ids.shape[1]


def test_grounding_slots_start_distinct_and_instruction_dependent() -> None:
    # Queries built from the words with small weights are ~1e-3; without the cosine + temperature every map
    # would start flat and every slot the same, with a gradient too small to leave that state.
    policy = build("l1", grounding_slots=2).eval()
    batch = make_batch(2)
    with torch.no_grad():
        maps = policy.grounding_maps(batch)  # (B, N, K, h, w)
        swapped = policy.grounding_maps({**batch, "task": ["put the blue cube in the bowl", "pick up the green cube"]})
    assert maps.shape[:3] == (2, len(SPEC.cameras), 2)
    torch.testing.assert_close(maps.sum((-1, -2)), torch.ones(maps.shape[:3]))
    uniform = 1.0 / (maps.shape[-1] * maps.shape[-2])
    assert maps.flatten(3).max(-1).values.min() > 2 * uniform, "every map starts with a peak"
    assert (maps[:, :, 0] - maps[:, :, 1]).abs().sum((-1, -2)).min() > 0.05, "the two slots start apart"
    assert (maps - swapped).abs().sum((-1, -2)).min() > 0.05, "another instruction moves every map"


def test_grounding_query_is_a_function_of_the_words_alone() -> None:
    # A bias on the word-to-query path is shared by every slot and instruction; in training it outgrew the
    # word term and left one instruction-blind query. Whatever the weights, silent words must give no query.
    grounding = GroundingAttention(d_model=16, feat_channels=4, n_slots=2, n_cameras=1, d_key=8)
    with torch.no_grad():
        for param in grounding.parameters():
            param.normal_()
    words = torch.zeros(3, 5, 16)
    valid = torch.ones(3, 5, dtype=torch.bool)
    assert grounding.read_instruction(words, valid).abs().max() == 0
    assert grounding.read_instruction(torch.randn(3, 5, 16), valid).abs().max() > 0


def test_pixels_to_cell_matches_the_stem_cell_centres() -> None:
    pixels = torch.tensor([[0.5, 0.5], [4.5, 0.5], [63.5, 63.5], [-9.0, 30.0], [2.4, 6.6]])
    cells = pixels_to_cell(pixels, (16, 16), (64, 64))
    # (0.5, 0.5) is cell 0's centre; 4 px right is the next column; the far corner is the last cell;
    # a point off the image clamps to the edge column; (2.4, 6.6) rounds to column 0 (0.48), row 2 (1.53).
    assert cells.tolist() == [0, 1, 255, 7 * 16 + 0, 2 * 16 + 0]


def _grounding_batch(batch_size: int = 4) -> dict:
    batch = make_batch(batch_size)
    gen = torch.Generator().manual_seed(3)
    size = SPEC.image_shape[1]
    batch["goal_pixels"] = torch.rand(batch_size, len(SPEC.cameras), 2, 2, generator=gen) * size
    is_pad = torch.zeros(batch_size, len(SPEC.cameras), 2, dtype=torch.bool)
    is_pad[0, 1, 1] = True  # out of view in one camera
    batch["goal_pixels_is_pad"] = is_pad
    return batch


def test_grounding_loss_pulls_each_slot_to_its_keyframe_cell() -> None:
    policy = build("l1", grounding_slots=2, grounding_loss_weight=1.0)
    batch = _grounding_batch()
    _, terms = policy(batch)
    assert "grounding_ce" in terms and terms["grounding_ce"] > 1.0
    overfit(policy, batch, steps=60)
    policy.eval()
    with torch.no_grad():
        maps = policy.grounding_maps(batch)  # (B, N, K, h, w)
    target = pixels_to_cell(batch["goal_pixels"], tuple(maps.shape[-2:]), tuple(SPEC.image_shape[1:]))
    hit = maps[:, :, :2].flatten(3).argmax(-1) == target
    assert hit[~batch["goal_pixels_is_pad"]].float().mean() > 0.8


def test_grounding_loss_without_targets_names_the_fix() -> None:
    policy = build("l1", grounding_slots=2, grounding_loss_weight=1.0)
    with pytest.raises(ValueError, match="keyframe_pixels"):
        policy(make_batch(2))
