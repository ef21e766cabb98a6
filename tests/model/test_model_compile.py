"""Regional torch.compile: the instruction strings stay outside every compiled region."""

from __future__ import annotations

import copy

import pytest
import torch
from model_helpers import SPEC, TASKS, VOCAB, make_batch, make_stats, policy_config
from torch import nn
from torch._dynamo.testing import CompileCounter

from vla.policy import VLAPolicy
from vla.train.compile import compile_regions


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_new_instructions_do_not_recompile_and_outputs_match_eager():
    torch.manual_seed(0)
    policy = VLAPolicy(policy_config("l1"), SPEC, VOCAB, make_stats())
    eager = copy.deepcopy(policy)
    counter = CompileCounter()
    regions = compile_regions(policy, backend=counter)
    # Every transformer layer (vision, language model, head) and the conv stem.
    n_blocks = sum(1 for m in eager.modules() if type(m).__name__ == "Block")
    assert len(regions) == n_blocks + 1 and "backbone.vision.stem" in regions

    first = make_batch(4)
    policy(first)
    compiled_frames = counter.frame_count
    assert compiled_frames > 0
    # The same shapes with other instructions at every position: the cause of the old recompilations.
    rotated = make_batch(4)
    rotated["task"] = [TASKS[(i + 1) % len(TASKS)] for i in range(4)]
    assert rotated["task"] != first["task"]
    with torch.random.fork_rng():
        torch.manual_seed(1)
        loss, terms = policy(rotated)
    assert counter.frame_count == compiled_frames
    with torch.random.fork_rng():
        torch.manual_seed(1)
        eager_loss, eager_terms = eager(rotated)
    assert loss.item() == pytest.approx(eager_loss.item(), rel=1e-5)
    assert terms.keys() == eager_terms.keys()
    loss.backward()
    eager_loss.backward()
    for (name, p), q in zip(policy.named_parameters(), eager.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_without_layers_names_the_fix():
    with pytest.raises(ValueError, match=r"train\.compile=false"):
        compile_regions(nn.Sequential(nn.Linear(2, 2)))
