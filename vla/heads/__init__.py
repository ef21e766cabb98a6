"""Action heads: read the backbone's hidden states and predict a chunk of H future actions.

Every head has ``loss(prefix, actions, is_pad) -> (loss, terms)`` on normalised actions and
``sample(prefix, n_samples, num_steps, generator) -> (B, n_samples, H, A)`` normalised actions whose
gripper dims are already binary (0 open, 1 closed). ``stochastic`` says whether samples can differ.
"""

from __future__ import annotations

import torch
from torch import nn

from vla.model_config import HeadConfig
from vla.types import FeatureSpec


def gripper_mask(spec: FeatureSpec) -> torch.Tensor:
    """Bool mask over action dims, True on binary gripper dims."""
    mask = torch.zeros(spec.action_dim, dtype=torch.bool)
    mask[list(spec.gripper_dims)] = True
    return mask


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of (B, H, D) ``values`` over the (B, H) steps where ``valid`` is True (all D dims of each)."""
    weights = valid[..., None].to(values.dtype)
    denom = (weights.sum() * values.shape[-1]).clamp_min(1.0)
    return (values * weights).sum() / denom


def build_head(cfg: HeadConfig, spec: FeatureSpec, d_backbone: int) -> nn.Module:
    # Imported here: the head modules import the helpers above from this package.
    if cfg.kind == "l1":
        from vla.heads.l1 import L1Head

        return L1Head(cfg, spec, d_backbone)
    from vla.heads.flow import FlowHead

    return FlowHead(cfg, spec, d_backbone)


__all__ = ["build_head", "gripper_mask", "masked_mean"]
