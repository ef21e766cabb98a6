"""Transformer building blocks shared by the vision encoder, the language model and the action heads.

Attention masks are boolean with True = "may attend", the convention of
``F.scaled_dot_product_attention``. Key padding masks are (B, T) with True = real token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in float32: under bf16 autocast the mean of squares loses too much precision.
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def make_norm(kind: str, dim: int) -> nn.Module:
    return RMSNorm(dim) if kind == "rms" else nn.LayerNorm(dim)


class MLP(nn.Module):
    """SwiGLU (LM default) or GELU (ViT style) feed-forward block."""

    def __init__(self, dim: int, kind: str = "swiglu", ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.kind = kind
        self.up = nn.Linear(dim, hidden * (2 if kind == "swiglu" else 1), bias=kind != "swiglu")
        self.down = nn.Linear(hidden, dim, bias=kind != "swiglu")
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.kind == "swiglu":
            gate, val = h.chunk(2, dim=-1)
            h = F.silu(gate) * val
        else:
            h = F.gelu(h)
        return self.drop(self.down(h))


class Rotary(nn.Module):
    """Rotary position embedding evaluated at explicit position ids (so padding does not shift positions)."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) -> cos, sin of shape (B, 1, T, head_dim)."""
        angles = positions.float()[..., None] * self.inv_freq
        angles = torch.cat([angles, angles], dim=-1)[:, None]
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``memory`` is None, cross-attention otherwise."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"attention width {dim} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, -1).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        q = self._split(self.q(x))
        k, v = (self._split(t) for t in self.kv(x if memory is None else memory).chunk(2, dim=-1))
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.out(y.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Pre-norm block: [self-attention] -> [cross-attention to memory] -> MLP, each residual.

    ``self_attn=False`` gives the Flamingo-style cross-attention-only block used by cross fusion.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        *,
        norm: str = "rms",
        mlp: str = "swiglu",
        mlp_ratio: float = 8 / 3,
        dropout: float = 0.0,
        self_attn: bool = True,
        cross_attn: bool = False,
        memory_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(dim, n_heads, dropout) if self_attn else None
        self.norm_self = make_norm(norm, dim) if self_attn else None
        self.cross_attn = Attention(dim, n_heads, dropout, kv_dim=memory_dim) if cross_attn else None
        self.norm_cross = make_norm(norm, dim) if cross_attn else None
        self.norm_mlp = make_norm(norm, dim)
        self.mlp = MLP(dim, mlp, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.self_attn is not None:
            x = x + self.drop(self.self_attn(self.norm_self(x), mask=mask, rope=rope))
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("this block cross-attends and needs a memory tensor")
            x = x + self.drop(self.cross_attn(self.norm_cross(x), memory=memory, mask=memory_mask))
        return x + self.mlp(self.norm_mlp(x))


def key_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, Tk) key padding mask (True = real) -> (B, 1, 1, Tk) attention mask."""
    return valid[:, None, None, :]


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """Causal mask combined with key padding: (B, T) -> (B, 1, T, T).

    A padding query still sees the real tokens before it, so no row is fully masked (which would
    make SDPA return NaN); callers keep the first token real (e.g. <bos> or a visual token).
    """
    t = valid.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    return causal[None, None] & valid[:, None, None, :]


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of scalar times t (B,) in [0, 1] -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    # Times live in [0, 1]; scaling by 1000 spreads them over the frequency range like integer diffusion steps.
    args = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([args.sin(), args.cos()], dim=-1)
    return F.pad(emb, (0, dim % 2))
