"""Parallel-decoding action head (ACT-style): H learned queries decoded in one pass.

Continuous dims are regressed with an L1 loss in normalised units; gripper dims are logits trained
with binary cross-entropy and thresholded at probability 0.5, since the demos only ever open or close.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla.backbones import BackboneOutput
from vla.backbones.layers import Block, RMSNorm, key_mask
from vla.heads import gripper_mask, masked_mean
from vla.model_config import HeadConfig
from vla.types import FeatureSpec


class L1Head(nn.Module):
    stochastic = False

    def __init__(self, cfg: HeadConfig, spec: FeatureSpec, d_backbone: int) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model or d_backbone
        self.queries = nn.Parameter(torch.randn(cfg.chunk_size, d) * 0.02)
        self.blocks = nn.ModuleList(
            Block(d, cfg.n_heads, dropout=cfg.dropout, cross_attn=True, memory_dim=d_backbone)
            for _ in range(cfg.n_layers)
        )
        self.norm = RMSNorm(d)
        self.out = nn.Linear(d, spec.action_dim)
        self.register_buffer("gripper", gripper_mask(spec), persistent=False)

    def _decode(self, prefix: BackboneOutput) -> torch.Tensor:
        x = self.queries.expand(prefix.hidden.shape[0], -1, -1)
        memory_mask = key_mask(prefix.mask)
        for block in self.blocks:
            x = block(x, memory=prefix.hidden, memory_mask=memory_mask)
        return self.out(self.norm(x))

    def loss(
        self, prefix: BackboneOutput, actions: torch.Tensor, is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """actions: (B, H, A) normalised, gripper dims in {0, 1}; is_pad: (B, H) True past the episode end."""
        pred = self._decode(prefix)
        valid = ~is_pad
        cont, grip = ~self.gripper, self.gripper
        l1 = masked_mean((pred[..., cont] - actions[..., cont]).abs(), valid)
        total = l1
        terms = {"l1": l1.item()}
        if grip.any():
            bce = F.binary_cross_entropy_with_logits(pred[..., grip], actions[..., grip], reduction="none")
            bce = masked_mean(bce, valid)
            total = total + self.cfg.gripper_loss_weight * bce
            terms["gripper_bce"] = bce.item()
        terms["loss"] = total.item()
        return total, terms

    def sample(
        self,
        prefix: BackboneOutput,
        n_samples: int = 1,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, 1, H, A) normalised chunk, gripper dims in {0, 1}. The head is deterministic: n_samples must be 1."""
        if n_samples != 1:
            raise ValueError(
                f"n_samples={n_samples} needs a stochastic head; the l1 head predicts one chunk, "
                "use head.kind='flow' for sample disagreement"
            )
        pred = self._decode(prefix)
        # torch.where, not a boolean-mask assignment: that one syncs with the host (to count the mask),
        # which a captured CUDA graph cannot do.
        pred = torch.where(self.gripper, (torch.sigmoid(pred) > 0.5).to(pred.dtype), pred)
        return pred[:, None]
