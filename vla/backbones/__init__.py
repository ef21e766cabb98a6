"""Vision-language backbones: images + instruction + proprio state -> a sequence of hidden states.

Every backbone is an ``nn.Module`` with an attribute ``d_model`` (output width) and
``forward(images, tasks, state) -> BackboneOutput`` where ``images`` is (B, N_cams, 3, H, W) in [0, 1],
``tasks`` a list of B instructions and ``state`` the normalised proprio state (B, S).
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


def build_backbone(cfg: BackboneConfig, spec: FeatureSpec, vocab: list[str]) -> nn.Module:
    # Imported here: the backbone modules import BackboneOutput from this package.
    if cfg.kind == "scratch":
        from vla.backbones.tiny import ScratchVLM

        return ScratchVLM(cfg, spec, vocab)
    from vla.backbones.hf import HFBackbone

    return HFBackbone(cfg, spec)


__all__ = ["BackboneOutput", "build_backbone"]
