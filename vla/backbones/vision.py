"""Vision encoder of the from-scratch VLM and the MLP projector into the language model's width.

A few stride-2 convolutions followed by a patchify convolution replace the single large-kernel patch
embedding of a ViT: on 64-96 px robot images a conv stem learns useful local features far faster than
a linear patch embedding, which matters when training from scratch on a CPU. Transformer layers
(SigLIP-style: LayerNorm, GELU MLP, bidirectional attention) then mix the patch tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from vla.backbones.film import apply_film
from vla.backbones.layers import Block
from vla.model_config import BackboneConfig

# Images arrive in [0, 1]; centring them around 0 speeds up early training of the conv stem.
_PIXEL_MEAN, _PIXEL_STD = 0.5, 0.25


def patch_grid(cfg: BackboneConfig, image_hw: tuple[int, int]) -> tuple[int, int]:
    """Patch-token grid (rows, cols) the encoder produces for an image of size ``image_hw``."""
    h, w = image_hw
    for _ in cfg.stem_channels:
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # 3x3 conv, stride 2, padding 1
    if h < cfg.patch_size or w < cfg.patch_size:
        raise ValueError(
            f"image {image_hw} shrinks to {h}x{w} after the conv stem, smaller than patch_size="
            f"{cfg.patch_size}; use fewer stem_channels or a smaller patch_size"
        )
    return (h - cfg.patch_size) // cfg.patch_stride + 1, (w - cfg.patch_size) // cfg.patch_stride + 1


class VisionEncoder(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> (B, P, d_vision) patch tokens."""

    def __init__(self, cfg: BackboneConfig, image_hw: tuple[int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in cfg.stem_channels:
            # GroupNorm rather than BatchNorm: statistics must not depend on the batch (eval on one frame).
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.GELU()]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, cfg.d_vision, cfg.patch_size, stride=cfg.patch_stride))
        self.stem = nn.Sequential(*layers)
        rows, cols = patch_grid(cfg, image_hw)
        self.num_patches = rows * cols
        self.pos = nn.Parameter(torch.randn(1, self.num_patches, cfg.d_vision) * 0.02)
        self.blocks = nn.ModuleList(
            Block(cfg.d_vision, cfg.vision_heads, norm="layer", mlp="gelu", mlp_ratio=4.0, dropout=cfg.dropout)
            for _ in range(cfg.vision_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_vision)
        # Widths FiLM modulates when the instruction conditions the encoder: each stem stage after its
        # GroupNorm, then the patch tokens.
        self.film_channels = [*cfg.stem_channels, cfg.d_vision]

    @property
    def feature_channels(self) -> int:
        """Channels of the stem's feature map before the patchify (what grounding attends over)."""
        return self.stem[-1].in_channels

    def stem_features(
        self, images: torch.Tensor, film: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, C, h, w) conv-stem features, before the patchify convolution."""
        if film is not None and len(film) != len(self.film_channels):
            raise ValueError(f"got {len(film)} FiLM pairs, the encoder modulates {len(self.film_channels)} layers")
        x = (images - _PIXEL_MEAN) / _PIXEL_STD
        stage = 0
        for layer in self.stem[:-1]:
            x = layer(x)
            if film is not None and isinstance(layer, nn.GroupNorm):
                x = apply_film(x, *film[stage])
                stage += 1
        return x

    def patch_tokens(
        self, features: torch.Tensor, film: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> torch.Tensor:
        """Stem features -> (B, P, d_vision) patch tokens mixed by the transformer layers."""
        x = self.stem[-1](features).flatten(2).transpose(1, 2)
        if film is not None:
            x = apply_film(x, *film[-1])
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(
        self, images: torch.Tensor, film: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> torch.Tensor:
        """``film``: one (scale, shift) pair of shape (B, C) per entry of ``film_channels``, or None."""
        return self.patch_tokens(self.stem_features(images, film), film)


class Projector(nn.Module):
    """Two-layer MLP (Linear-GELU-Linear) from the vision width into the language model width."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
