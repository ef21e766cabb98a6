"""Flow-matching action expert (pi0-style).

The head denoises a whole chunk: noisy action tokens plus a sinusoidal time embedding go through
transformer layers that cross-attend to the backbone's hidden states (the "prefix"). Sampling
integrates ``num_steps`` Euler steps from Gaussian noise; the prefix is an input, so the backbone
runs once per call however many steps and samples are drawn.

Internally ``s`` is the noise level: x_s = s * noise + (1 - s) * action, s = 1 is pure noise.
``flow_target="noise_minus_action"`` (pi0) feeds the network t = s and regresses dx/ds = noise - action;
``"action_minus_noise"`` (rectified flow) feeds t = 1 - s and regresses action - noise. Training draws
s from Beta(1.5, 1) (pi0: more weight on noisy inputs, where the chunk is decided) or uniformly.

Gripper dims are part of the flow, encoded as -1 (open) / +1 (closed), and thresholded at 0 after
integration; samples can then also disagree on the gripper, which the risk score uses.
"""

from __future__ import annotations

import torch
from torch import nn

from vla.backbones import BackboneOutput
from vla.backbones.layers import Block, RMSNorm, key_mask, sinusoidal_embedding
from vla.heads import gripper_mask, masked_mean
from vla.model_config import HeadConfig
from vla.types import FeatureSpec

# Keeps s away from 0 so that every training example carries some noise (as in pi0).
_MIN_NOISE = 1e-3


class FlowHead(nn.Module):
    stochastic = True

    def __init__(self, cfg: HeadConfig, spec: FeatureSpec, d_backbone: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk_size, self.action_dim = cfg.chunk_size, spec.action_dim
        d = self.width = cfg.d_model or d_backbone
        self.action_in = nn.Linear(spec.action_dim, d)
        # pi0 fuses action and time by an MLP over their concatenation.
        self.action_time_mlp = nn.Sequential(nn.Linear(2 * d, d), nn.SiLU(), nn.Linear(d, d))
        self.pos = nn.Parameter(torch.randn(cfg.chunk_size, d) * 0.02)
        self.blocks = nn.ModuleList(
            Block(d, cfg.n_heads, dropout=cfg.dropout, cross_attn=True, memory_dim=d_backbone)
            for _ in range(cfg.n_layers)
        )
        self.norm = RMSNorm(d)
        self.out = nn.Linear(d, spec.action_dim)
        self.register_buffer("gripper", gripper_mask(spec), persistent=False)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, prefix: BackboneOutput) -> torch.Tensor:
        """Predicted velocity for noisy chunks x (B, H, A) at network times t (B,)."""
        a = self.action_in(x.to(self.action_in.weight.dtype))
        time = sinusoidal_embedding(t, self.width).to(a.dtype)[:, None].expand_as(a)
        h = self.action_time_mlp(torch.cat([a, time], dim=-1)) + self.pos
        memory_mask = key_mask(prefix.mask)
        for block in self.blocks:
            h = block(h, memory=prefix.hidden, memory_mask=memory_mask)
        return self.out(self.norm(h))

    def _network_time(self, s: torch.Tensor) -> torch.Tensor:
        return s if self.cfg.flow_target == "noise_minus_action" else 1.0 - s

    def _to_flow(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.where(self.gripper, 2.0 * actions - 1.0, actions)

    def _sample_noise_level(self, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        u = _rand((n,), device, generator, normal=False)
        if self.cfg.time_sampling == "beta":
            u = u.pow(1.0 / 1.5)  # inverse CDF of Beta(1.5, 1), which is x ** 1.5
        return _MIN_NOISE + (1.0 - _MIN_NOISE) * u

    def loss(
        self,
        prefix: BackboneOutput,
        actions: torch.Tensor,
        is_pad: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """actions: (B, H, A) normalised, gripper dims in {0, 1}; is_pad: (B, H) True past the episode end."""
        y = self._to_flow(actions)
        noise = _rand(y.shape, y.device, generator).to(y.dtype)
        s = self._sample_noise_level(y.shape[0], y.device, generator).to(y.dtype)
        x = s[:, None, None] * noise + (1.0 - s[:, None, None]) * y
        target = noise - y if self.cfg.flow_target == "noise_minus_action" else y - noise
        v = self.velocity(x, self._network_time(s), prefix)
        mse = masked_mean((v - target).pow(2), ~is_pad)
        return mse, {"flow_mse": mse.item(), "loss": mse.item()}

    def sample(
        self,
        prefix: BackboneOutput,
        n_samples: int = 1,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, n_samples, H, A) normalised chunks, gripper dims in {0, 1}; all samples in one batched pass."""
        steps = num_steps or self.cfg.num_steps
        if n_samples < 1 or steps < 1:
            raise ValueError(f"n_samples and num_steps must be >= 1, got {n_samples} and {steps}")
        b = prefix.hidden.shape[0]
        # Repeat the prefix rather than recompute it: the backbone already ran once for this batch.
        prefix = BackboneOutput(*(None if t is None else t.repeat_interleave(n_samples, dim=0) for t in prefix))
        device = prefix.hidden.device
        # The chunk is integrated in float32 even when the network runs in bf16, so steps do not lose precision.
        x = _rand((b * n_samples, self.chunk_size, self.action_dim), device, generator)
        sign = 1.0 if self.cfg.flow_target == "noise_minus_action" else -1.0
        for i in range(steps):
            s = torch.full((b * n_samples,), 1.0 - i / steps, device=device)
            x = x - (sign / steps) * self.velocity(x, self._network_time(s), prefix).float()
        x = torch.where(self.gripper, (x > 0).to(x.dtype), x)
        return x.view(b, n_samples, self.chunk_size, self.action_dim)


def _rand(
    shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None, normal: bool = True
) -> torch.Tensor:
    """Gaussian (or uniform) draw on ``device`` from ``generator``, which may live on another device."""
    gen_device = generator.device if generator is not None else device
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=generator, device=gen_device).to(device)
