"""Normaliser (stats in buffers, gripper untouched) and hue-preserving augmentations."""

from __future__ import annotations

import colorsys

import pytest
import torch
from model_helpers import SPEC, make_stats

from vla.processing import Normalizer, color_jitter, random_shift
from vla.processing.augment import ImageAugment
from vla.processing.normalize import MIN_STD


def test_normalise_round_trip_and_gripper_passthrough() -> None:
    stats = make_stats()
    norm = Normalizer(SPEC, stats)
    actions = torch.randn(5, 3, SPEC.action_dim)
    actions[..., 6] = torch.tensor([0.0, 1.0, 1.0])
    out = norm.normalize("action", actions)
    assert torch.equal(out[..., 6], actions[..., 6])
    expected = (actions[..., 0] - stats["action"]["mean"][0]) / stats["action"]["std"][0]
    torch.testing.assert_close(out[..., 0], expected)
    torch.testing.assert_close(norm.unnormalize("action", out), actions)


def test_tiny_std_is_clamped() -> None:
    stats = make_stats()
    stats["observation.state"]["std"][2] = 0.0
    norm = Normalizer(SPEC, stats)
    state = torch.zeros(1, SPEC.state_dim)
    state[0, 2] = stats["observation.state"]["mean"][2] + 1.0
    assert norm.normalize("observation.state", state)[0, 2].item() == pytest.approx(1.0 / MIN_STD)


def test_stats_live_in_the_state_dict() -> None:
    norm = Normalizer(SPEC, make_stats())
    blank = Normalizer(SPEC, None)
    blank.load_state_dict(norm.state_dict())
    x = torch.randn(2, SPEC.state_dim)
    torch.testing.assert_close(blank.normalize("observation.state", x), norm.normalize("observation.state", x))
    assert {"state_mean", "state_std", "action_min", "action_max"} <= set(norm.state_dict())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("action"), "'action'"),
        (lambda s: s["action"].pop("std"), "std"),
        (lambda s: s["observation.state"].__setitem__("mean", torch.zeros(3)), "recompute"),
        (lambda s: s["action"]["mean"].__setitem__(0, float("nan")), "NaN"),
    ],
)
def test_bad_stats_are_explained(mutate, message: str) -> None:
    stats = make_stats()
    mutate(stats)
    with pytest.raises(ValueError, match=message):
        Normalizer(SPEC, stats)


def test_random_shift_moves_content_and_is_seeded() -> None:
    images = torch.rand(6, 3, 16, 16)
    a = random_shift(images, 3, torch.Generator().manual_seed(0))
    b = random_shift(images, 3, torch.Generator().manual_seed(0))
    assert a.shape == images.shape and torch.equal(a, b)
    assert not torch.equal(a, images)
    # Each output is an integer translation of its input: some crop of the padded image matches exactly.
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3), mode="replicate")
    for i in range(6):
        windows = padded[i].unfold(1, 16, 1).unfold(2, 16, 1)  # (3, 7, 7, 16, 16)
        assert (windows == a[i][:, None, None]).flatten(3).all(-1).all(0).any()


def test_color_jitter_keeps_hue() -> None:
    # Mid-range colours so that clamping to [0, 1] does not interfere.
    colours = torch.tensor([[0.6, 0.3, 0.3], [0.3, 0.55, 0.35], [0.3, 0.35, 0.6]])
    images = colours[:, :, None, None].repeat(1, 1, 8, 8)
    images[:, :, :4] *= 0.8  # some contrast inside each image
    out = color_jitter(images, 0.2, 0.2, torch.Generator().manual_seed(3))
    assert not torch.allclose(out, images)
    for before, after in zip(images[:, :, 0, 0], out[:, :, 0, 0], strict=True):
        h_before = colorsys.rgb_to_hsv(*before.tolist())[0]
        h_after = colorsys.rgb_to_hsv(*after.tolist())[0]
        assert h_after == pytest.approx(h_before, abs=1e-4)


def test_augment_is_identity_in_eval_and_checks_input() -> None:
    aug = ImageAugment(4, 0.2, 0.2).eval()
    images = torch.rand(2, 3, 8, 8)
    assert aug(images) is images
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        random_shift(torch.rand(3, 8, 8), 2)
