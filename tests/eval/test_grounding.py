"""The instruction-swap probe: a policy that follows the instruction vs one that ignores it."""

from __future__ import annotations

import pytest
from standins import expert_factory, language_blind_factory

from envs.config import EnvConfig
from vla.eval.grounding import GroundingEpisode, probe_grounding, summarize_grounding

PICK_PLACE = EnvConfig(task="pick_place", cameras=[])


def _by_swap(policy, swaps, workers=1):
    episodes = probe_grounding(policy, PICK_PLACE, swaps, episodes=2, workers=workers, progress=False)
    assert [(e.swap, e.seed) for e in episodes] == [(s, 100_000 + i) for s in swaps for i in range(2)]
    return {s.swap: s for s in summarize_grounding(episodes)}


def test_a_policy_that_follows_the_instruction_goes_for_the_newly_named_cube_and_pad():
    out = _by_swap(expert_factory, ("none", "both"))
    for swap in ("none", "both"):
        s = out[swap]
        assert s.success.successes == s.lifted_named.successes == s.left_on_named.successes == 2
    assert out["both"].lifted_original.successes == out["both"].left_on_original.successes == 0


def test_a_language_blind_policy_is_caught_going_for_the_originally_named_cube():
    s = _by_swap(language_blind_factory, ("both",))["both"]
    assert s.success.successes == s.lifted_named.successes == s.left_on_named.successes == 0
    assert s.lifted_original.successes == s.left_on_original.successes == 2


def test_swapping_the_target_only_keeps_the_cube_and_moves_the_pad_in_worker_processes():
    s = _by_swap(expert_factory, ("target",), workers=2)["target"]
    assert s.lifted_named.successes == s.lifted_original.successes == 2  # same cube
    assert s.left_on_named.successes == 2 and s.left_on_original.successes == 0


def test_summary_counts_hand_made_episodes():
    def ep(swap, success, lifted, left_on, named, original):
        return GroundingEpisode(0, swap, success, lifted, left_on, named, original)

    episodes = [
        ep("both", True, 1, 2, (1, 2), (0, 0)),
        ep("both", False, 0, 0, (2, 1), (0, 0)),  # went for the original cube and pad
        ep("both", False, None, None, (1, 1), (0, 0)),  # lifted nothing
        ep("object", False, 0, None, (1, None), (0, None)),  # pick_cube: no target
    ]
    both, obj = summarize_grounding(episodes)
    assert (both.swap, both.episodes, both.success.successes) == ("both", 3, 1)
    assert (both.lifted_named.successes, both.lifted_original.successes) == (1, 1)
    assert (both.left_on_named.successes, both.left_on_original.successes) == (1, 1)
    assert obj.lifted_original.successes == 1 and obj.left_on_named.trials == 0
    assert str(obj.left_on_named) == "n/a"


@pytest.mark.parametrize(("cfg", "swaps", "match"), [
    (PICK_PLACE, ("colour",), "unknown instruction swap"),
    (EnvConfig(task="pick_cube", cameras=[]), ("none", "target"), "no target to re-name"),
])
def test_bad_swaps_are_rejected_before_any_episode_runs(cfg, swaps, match):
    with pytest.raises(ValueError, match=match):
        probe_grounding(expert_factory, cfg, swaps, episodes=1, progress=False)
