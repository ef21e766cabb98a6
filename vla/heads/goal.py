"""Auxiliary keyframe-goal head: from the backbone alone, predict the arm's state at grasp and release.

Training-only. With several look-alike objects in view, the action loss rewards finding the named
object only weakly at first: most of a chunk is explained by the arm's own state, and the instruction
matters only through a conjunction (this word and that colour blob) that the gradient barely sees
before the model has it. The keyframe states (vla/data/keyframes.py) are a function of where the named
object and target are and of nothing the arm's state reveals, so this loss pushes the backbone
straight at the grounding. One learned query per keyframe reads the backbone's hidden states.
"""

from __future__ import annotations

import torch
from torch import nn

from vla.backbones import BackboneOutput
from vla.backbones.layers import Block, RMSNorm, key_mask
from vla.data.keyframes import KEYFRAMES
from vla.heads import masked_mean


class KeyframeGoalHead(nn.Module):
    def __init__(self, d_backbone: int, n_heads: int, state_dim: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(len(KEYFRAMES), d_backbone) * 0.02)
        self.block = Block(d_backbone, n_heads, self_attn=False, cross_attn=True)
        self.norm = RMSNorm(d_backbone)
        self.out = nn.Linear(d_backbone, state_dim)

    def forward(self, prefix: BackboneOutput) -> torch.Tensor:
        """(B, 2, state_dim) predicted keyframe states, normalised like the state input."""
        x = self.queries.expand(prefix.hidden.shape[0], -1, -1)
        x = self.block(x, memory=prefix.hidden, memory_mask=key_mask(prefix.mask))
        return self.out(self.norm(x))

    def loss(self, prefix: BackboneOutput, goal: torch.Tensor, goal_is_pad: torch.Tensor) -> torch.Tensor:
        """Mean L1 in normalised units over the keyframes the episode has."""
        return masked_mean((self(prefix) - goal).abs(), ~goal_is_pad)
