"""Batched image augmentations for training on (B, 3, H, W) float images in [0, 1].

Pure torch, so they run on whatever device the batch is on. Colour jitter is limited to brightness
and contrast, which scale and shift all three channels alike and therefore keep the hue: the
instructions name objects by colour, so a hue shift would turn a correct label into a wrong one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=generator.device if generator is not None else like.device)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style shift: replicate-pad by ``pad`` pixels, then crop back to H x W at a random offset per image."""
    _check(images)
    if pad == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    gen_device = generator.device if generator is not None else images.device
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=gen_device).to(images.device)
    rows = offsets[:, 0:1] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indexing gathers every image's own window at once: result (B, H, W, C).
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def color_jitter(
    images: torch.Tensor, brightness: float, contrast: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-image brightness factor in [1-b, 1+b] and contrast factor in [1-c, 1+c]; hue is preserved."""
    _check(images)
    b = images.shape[0]
    out = images
    if brightness > 0:
        out = out * _uniform(b, 1 - brightness, 1 + brightness, images, generator)[:, None, None, None]
    if contrast > 0:
        # Blend towards the image's mean grey level: adds the same amount to R, G and B, so hue is kept.
        grey = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2]).mean(dim=(1, 2))[:, None, None, None]
        factor = _uniform(b, 1 - contrast, 1 + contrast, images, generator)[:, None, None, None]
        out = grey + factor * (out - grey)
    return out.clamp(0.0, 1.0)


class ImageAugment(nn.Module):
    """Random shift then colour jitter; identity in eval mode (the policy calls it on every camera)."""

    def __init__(self, shift_pad: int = 4, brightness: float = 0.2, contrast: float = 0.2) -> None:
        super().__init__()
        self.shift_pad, self.brightness, self.contrast = shift_pad, brightness, contrast

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return images
        images = random_shift(images, self.shift_pad, generator)
        return color_jitter(images, self.brightness, self.contrast, generator)


def _check(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"augmentations expect images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"augmentations expect float images in [0, 1], got dtype {images.dtype}")
