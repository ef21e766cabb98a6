"""Faster CPU kernels for LeRobot's policies, with the same parameters and the same function.

Diffusion Policy's 1-D U-Net spends most of a CPU training step in oneDNN's ``conv1d`` backward: at its
bottleneck (2048 -> 2048 channels, kernel 5, a horizon of 4) a forward and backward take ~330 ms in fp32,
at about 100 GFLOP/s. The same product written as unfold + one matrix multiply takes ~210 ms in fp32 and
~60 ms under bf16 autocast, where oneDNN's bf16 GEMMs run on the CPU's AVX-512 BF16 units (the
convolution gains nothing from bf16). LeRobot's Adam also runs its per-tensor loop on CPU, where torch
picks neither the multi-tensor nor the fused kernel by default; with 274 M parameters that is ~0.7 s a
step. Swapping both changes speed only: the weights are the same ``Parameter`` objects under the same
state-dict keys, and the outputs match the originals to float rounding (``tests/bench/test_bench_cpu_kernels.py``).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn


class MatmulConv1d(nn.Module):
    """``nn.Conv1d`` (zero padding, no dilation, one group) computed as unfold + a matrix multiply.

    Holds the convolution's own ``weight`` (out, in, k) and ``bias``, so checkpoints load either way."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        if not supports(conv):
            raise ValueError(f"{conv} uses dilation, groups, string or non-zero-mode padding, hooks or a "
                             "computed weight; keep it an nn.Conv1d")
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride = int(conv.stride[0])
        self.padding = int(conv.padding[0])  # supports() ruled out "same" / "valid"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, _ = x.shape
        out_ch, in_ch, k = self.weight.shape
        if c != in_ch:
            raise ValueError(f"input has {c} channels; this convolution takes {in_ch}")
        if self.padding:
            x = F.pad(x, (self.padding, self.padding))
        cols = x.unfold(2, k, self.stride)  # (N, C, L_out, k)
        l_out = cols.shape[2]
        cols = cols.permute(0, 2, 1, 3).reshape(n * l_out, c * k)  # rows: output positions
        y = F.linear(cols, self.weight.reshape(out_ch, in_ch * k), self.bias)
        return y.reshape(n, l_out, out_ch).transpose(1, 2)

    def extra_repr(self) -> str:
        out_ch, in_ch, k = self.weight.shape
        return f"{in_ch}, {out_ch}, kernel_size={k}, stride={self.stride}, padding={self.padding}"


def supports(conv: nn.Module) -> bool:
    """Whether ``conv`` is an ``nn.Conv1d`` that ``MatmulConv1d`` computes exactly (transposed ones are not).

    Hooks rule a convolution out: the old ``weight_norm`` / ``spectral_norm`` recompute ``weight`` in a
    pre-hook, and a copy would freeze it."""
    return (
        type(conv) is nn.Conv1d
        and conv.dilation == (1,)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and all(isinstance(p, int) and p >= 0 for p in conv.padding)
        and isinstance(conv.weight, nn.Parameter)
        and (conv.bias is None or isinstance(conv.bias, nn.Parameter))
        and not (conv._forward_hooks or conv._forward_pre_hooks or conv._backward_hooks
                 or conv._backward_pre_hooks)
    )


def convs_as_matmuls(model: nn.Module) -> int:
    """Replace, in place, every ``nn.Conv1d`` of ``model`` that ``MatmulConv1d`` computes exactly; returns
    how many were replaced (0 for models without 1-D convolutions, e.g. ACT)."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if supports(child):
                setattr(parent, name, MatmulConv1d(child))  # type: ignore[arg-type]
                replaced += 1
    return replaced


def with_fused_step(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same Adam / AdamW (same groups, rates, betas, decay) with torch's fused step; other optimisers,
    and differentiable ones (which the fused step does not support), are returned as they are. Call it
    before any schedule is built: the schedule must wrap the optimiser that steps."""
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or optimizer.defaults.get("differentiable"):
        return optimizer
    if optimizer.state:
        raise ValueError("the optimiser has already stepped; switch to the fused step before training")
    if any("initial_lr" in g for g in optimizer.param_groups):
        raise ValueError("a learning-rate schedule already wraps this optimiser and would keep stepping it; "
                         "switch to the fused step first, then build the schedule")
    # ``defaults`` can hold keys the constructor does not take (AdamW's ``decoupled_weight_decay``).
    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    groups = [{**g, "fused": True, "foreach": None} for g in optimizer.param_groups]
    return type(optimizer)(groups, **{**defaults, "fused": True, "foreach": None})
