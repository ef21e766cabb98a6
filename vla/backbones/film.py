"""Instruction-conditioned vision: FiLM layers that let the instruction steer the vision encoder.

With several look-alike objects in view ("the red cube" among three cubes and three pads), a vision
encoder that ignores the instruction must describe every object in its patch tokens, and the language
model must then learn to bind a colour word to one of them: a two-hop lookup that a small model trained
from scratch is slow to find. FiLM (Perez et al., 2018; the FiLM-EfficientNet of RT-1) lets the
instruction scale and shift the encoder's channels instead, so the conv stem itself can emphasise the
named object and the named target. Each modulation starts as the identity (zero-initialised output
layer), so a FiLM model begins exactly where the unconditioned one does.
"""

from __future__ import annotations

import torch
from torch import nn

from vla.backbones.layers import Block, Rotary, key_mask


class InstructionEncoder(nn.Module):
    """Embedded instruction tokens (B, T, d) + validity (B, T) -> one summary vector (B, d).

    One bidirectional transformer layer with rotary positions comes before the pooling: a bag of words
    cannot tell "the red cube on the blue pad" from "the blue cube on the red pad", while a word that
    can see its neighbour ("red" next to "cube") can. ``summary=False`` builds only the contextual part
    (grounding reads the word vectors, not the summary), so no parameter is left without a gradient.
    """

    def __init__(self, d_model: int, n_heads: int, mlp: str, mlp_ratio: float, summary: bool = True) -> None:
        super().__init__()
        self.rotary = Rotary(d_model // n_heads)
        self.block = Block(d_model, n_heads, norm="rms", mlp=mlp, mlp_ratio=mlp_ratio)
        self.norm = nn.LayerNorm(d_model) if summary else None

    def contextual(self, text: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T, d) word vectors that have seen their neighbours (what the grounding slots read)."""
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        return self.block(text, mask=key_mask(valid), rope=self.rotary(positions))

    def pool(self, contextual: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Masked mean of the contextual vectors -> (B, d) summary (what FiLM reads)."""
        if self.norm is None:
            raise RuntimeError("this InstructionEncoder was built with summary=False and cannot pool")
        weights = valid.to(contextual.dtype)[..., None]
        return self.norm((contextual * weights).sum(1) / weights.sum(1).clamp_min(1.0))

    def forward(self, text: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.pool(self.contextual(text, valid), valid)


class FiLMGenerator(nn.Module):
    """Summary vector (B, d) -> per-layer (scale, shift) pairs for the given channel widths."""

    def __init__(self, d_cond: int, channels: list[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(d_cond, 2 * c) for c in channels)
        self.start_as_identity()

    def start_as_identity(self) -> None:
        """Zero the output layers: scale 1 + 0, shift 0 whatever the instruction."""
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for head in self.heads:
            delta_scale, shift = head(cond).chunk(2, dim=-1)
            out.append((1.0 + delta_scale, shift))
        return out


def apply_film(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Modulate channels of a feature map (B, C, H, W) or token sequence (B, T, C) with (B, C) vectors."""
    if x.dim() == 4:
        return x * scale[:, :, None, None] + shift[:, :, None, None]
    return x * scale[:, None, :] + shift[:, None, :]
