"""Vision-language backbones: images + instruction + proprio state -> a sequence of hidden states.

Every backbone is an ``nn.Module`` with an attribute ``d_model`` (output width) and
``forward(images, tasks, state) -> BackboneOutput`` where ``images`` is (B, N_cams, 3, H, W) in [0, 1],
``tasks`` a list of B instructions and ``state`` the normalised proprio state (B, S). The from-scratch
backbone also takes ``tasks`` already tokenized on the device (``TextTokens``), which is how a captured
CUDA graph (vla/cuda_graph.py) feeds it: a graph cannot copy freshly tokenized ids to the GPU mid-replay.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vla.model_config import BackboneConfig
from vla.types import FeatureSpec


class BackboneOutput(NamedTuple):
    hidden: torch.Tensor  # (B, T, d_model)
    mask: torch.Tensor  # (B, T) bool, True on real tokens (False on instruction padding)
    # (B, N_cams, K, h, w) attention logits of the grounding slots, when the backbone has them
    grounding_logits: torch.Tensor | None = None


class TextTokens(NamedTuple):
    """A batch of tokenized instructions, right-padded: ids (B, L) long and valid (B, L) bool, True on real
    tokens. Padding is masked out and positions count real tokens only, so L does not change the output."""

    ids: torch.Tensor
    valid: torch.Tensor


def build_backbone(cfg: BackboneConfig, spec: FeatureSpec, vocab: list[str]) -> nn.Module:
    # Imported here: the backbone modules import BackboneOutput from this package.
    if cfg.kind == "scratch":
        from vla.backbones.tiny import ScratchVLM

        return ScratchVLM(cfg, spec, vocab)
    from vla.backbones.hf import HFBackbone

    return HFBackbone(cfg, spec)


__all__ = ["BackboneOutput", "TextTokens", "build_backbone"]
