"""Instruction-conditioned spatial attention: tokens that say where the named object and target are.

At 64x64 each patch token of the scratch encoder covers 16x16 pixels while a cube covers 3-4, so three
cubes can share a patch. The language model then has to recover a position from a pooled patch
description and bind a colour word to it, two things a small model trained from scratch learns slowly
(docs/BENCHMARKS.md, PickPlace). Here each of K slots reads the instruction (a learned query over its
contextual word vectors), turns what it read into a query, and attends over the conv stem's feature map
before the patchify (4x the patch grid's resolution per side). Matching a colour word to a pixel's
colour is then one dot product, and the position comes out as numbers the action head can read: the
map's expected image coordinates (a spatial soft-argmax, as in Levine et al., 2016, "End-to-End
Training of Deep Visuomotor Policies") and its spread, which says whether one place stood out.
Each (slot, camera) pair becomes one token of the language model's stream.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vla.backbones.layers import RMSNorm

# Appended to the attended features: expected x, y in [-1, 1] and their standard deviations.
_GEOMETRY = 4
# Cosine logits times 10 span [-10, 10]: a map can single out a few cells from the first step.
_START_TEMPERATURE = 10.0


class GroundingAttention(nn.Module):
    """Feature maps (B*N, C, H, W) + instruction tokens (B, T, d) -> (B, N*K, d) grounding tokens.

    Both attentions are normalised so that they start sharp and distinct instead of flat: with the usual
    small-weight init a query built from the instruction through two linear layers is ~1e-3, every map is
    uniform, every slot reads the same thing, and the gradient that would sharpen them is as small (the
    product of two near-zero factors). So the word-to-query layers start at unit gain
    (``reset_parameters``), the slots are unit-scale vectors read against normalised word keys, and the
    spatial logits are a learned temperature times the cosine between query and pixel key (as in
    query-key normalisation, Henry et al., 2020), so a map's sharpness does not wait on weight growth.
    """

    def __init__(self, d_model: int, feat_channels: int, n_slots: int, n_cameras: int, d_key: int = 32) -> None:
        super().__init__()
        self.n_slots, self.n_cameras, self.d_key = n_slots, n_cameras, d_key
        self.slots = nn.Parameter(torch.randn(n_slots, d_model))
        self.text_key = nn.Linear(d_model, d_model)
        self.text_key_norm = RMSNorm(d_model)
        # No biases on the way from the words to the query: a bias is the same for every slot and every
        # instruction, and under Adam it outgrows the small word-dependent term within a few hundred steps,
        # leaving one instruction-blind query for all slots.
        self.text_value = nn.Linear(d_model, d_model, bias=False)
        self.to_query = nn.Linear(d_model, d_key, bias=False)
        # 1x1 convolutions: a key and a value per feature-map position.
        self.pixel_key = nn.Conv2d(feat_channels, d_key, 1)
        self.pixel_value = nn.Conv2d(feat_channels, d_key, 1)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(_START_TEMPERATURE)))
        self.out = nn.Sequential(nn.Linear(d_key + _GEOMETRY, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        # Tells the language model which slot looked through which camera.
        self.slot_camera_embed = nn.Parameter(torch.randn(n_cameras, n_slots, d_model) * 0.02)

    def reset_parameters(self) -> None:
        """Unit-gain init for the word-to-query path (the backbone's 0.02 init would make it ~1e-3)."""
        for layer in (self.text_key, self.text_value, self.to_query):
            nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
        nn.init.normal_(self.slots)

    def read_instruction(self, text: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T, d) contextual word vectors + (B, T) validity -> (B, K, d_key) spatial queries."""
        keys = self.text_key_norm(self.text_key(text))
        logits = torch.einsum("kd,btd->bkt", self.slots, keys) / math.sqrt(text.shape[-1])
        logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
        read = torch.einsum("bkt,btd->bkd", logits.softmax(-1), self.text_value(text))
        return self.to_query(read)

    def attention_logits(self, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """(B*N, C, H, W) features + (B, K, d_key) queries -> (B*N, K, H*W) logits over positions."""
        keys = F.normalize(self.pixel_key(features).flatten(2), dim=1)  # (B*N, d_key, H*W)
        queries = F.normalize(queries.repeat_interleave(self.n_cameras, 0), dim=-1)
        return self.log_temperature.exp() * torch.einsum("bkd,bdp->bkp", queries, keys)

    def attention_maps(self, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """(B*N, C, H, W) features + (B, K, d_key) queries -> (B*N, K, H*W) softmax maps over positions."""
        return self.attention_logits(features, queries).softmax(-1)

    def forward(self, features: torch.Tensor, text: torch.Tensor, valid: torch.Tensor) -> GroundingOutput:
        bn, _, h, w = features.shape
        if bn % self.n_cameras:
            raise ValueError(f"got {bn} feature maps, not a multiple of the {self.n_cameras} cameras")
        logits = self.attention_logits(features, self.read_instruction(text, valid))
        maps = logits.softmax(-1)
        attended = torch.einsum("bkp,bdp->bkd", maps, self.pixel_value(features).flatten(2))
        mean, spread = soft_argmax(maps, h, w)
        tokens = self.out(torch.cat([attended, mean, spread], dim=-1))  # (B*N, K, d)
        b = bn // self.n_cameras
        tokens = tokens.view(b, self.n_cameras, self.n_slots, -1) + self.slot_camera_embed
        return GroundingOutput(tokens.flatten(1, 2), logits.view(b, self.n_cameras, self.n_slots, h, w))


class GroundingOutput(NamedTuple):
    tokens: torch.Tensor  # (B, N*K, d) for the language model's stream
    logits: torch.Tensor  # (B, N, K, h, w) attention logits, for a supervised grounding loss


def pixels_to_cell(pixels: torch.Tensor, grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
    """(..., 2) continuous pixel coordinates (x, y) -> (...) row-major index of the nearest stem cell.

    The stem's stride-2 convolutions (padding 1) centre cell i on pixel i * stride, i.e. on continuous
    coordinate i * stride + 0.5, with stride = image size / grid size; points off the image clamp to the edge.
    """
    (h, w), (img_h, img_w) = grid_hw, image_hw
    col = ((pixels[..., 0] - 0.5) / (img_w / w)).round().long().clamp(0, w - 1)
    row = ((pixels[..., 1] - 0.5) / (img_h / h)).round().long().clamp(0, h - 1)
    return row * w + col


def soft_argmax(maps: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., H*W) distributions over a row-major grid -> expected (x, y) in [-1, 1] and their std, (..., 2) each."""
    grid = _coordinate_grid(h, w, maps)
    mean = maps @ grid
    spread = (maps @ grid.square() - mean.square()).clamp_min(1e-6).sqrt()
    return mean, spread


def _coordinate_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(H*W, 2) pixel-centre coordinates (x, y) in [-1, 1], row-major like a flattened feature map."""
    ys = torch.linspace(-1.0, 1.0, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).view(h * w, 2)


def cell_centres(h: int, w: int, image_size: int) -> np.ndarray:
    """(h*w, 2) continuous pixel coordinates (x, y) of the stem cells' centres, row-major: the inverse of
    ``pixels_to_cell`` (cell i centred on i * stride + 0.5)."""
    stride_y, stride_x = image_size / h, image_size / w
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([cols * stride_x + 0.5, rows * stride_y + 0.5], axis=-1).reshape(-1, 2)
