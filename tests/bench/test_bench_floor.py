"""The training-step floor: counted dense FLOPs and the GEMM ceiling they are divided by."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vla.baselines.floor import StepWork, count_gflop, gemm_ceiling, gemm_seconds, step_work


def test_matrix_products_are_counted_forward_and_backward():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    w = torch.randn(16, 8, requires_grad=True)

    def step() -> None:
        (a @ b @ w).sum().backward()  # forward: 64x32x16 and 64x16x8; backward: dL/dw = (a@b)^T @ dL/dy

    work = step_work(step, steps=2)
    assert work.gflop * 1e9 == pytest.approx(2 * (64 * 32 * 16 + 64 * 16 * 8 + 16 * 64 * 8))
    assert work.gemm_seconds > 0


def test_attention_and_convolution_are_counted():
    q = torch.randn(2, 4, 16, 8)  # batch, heads, tokens, head width
    # Q K^T and the weighted sum of V: 2 * (2 B H T^2 D); the fused CPU kernel alone would report none.
    assert count_gflop(lambda: F.scaled_dot_product_attention(q, q, q)) * 1e9 == pytest.approx(4 * 2 * 4 * 16 * 16 * 8)
    conv, x = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.randn(2, 3, 8, 8)
    forward = 2 * 2 * 8 * 8 * 8 * 27  # batch * output pixels * output channels * (3x3x3 inputs), multiply-add
    assert count_gflop(lambda: conv(x)) * 1e9 == pytest.approx(forward)


def test_floor_is_the_work_at_the_ceiling():
    assert StepWork(gflop=10.0, gemm_seconds=0.05).floor_ms(250.0) == pytest.approx(40.0)


def test_gemm_ceiling_is_a_rate_and_bad_inputs_are_refused():
    assert gemm_ceiling(torch.float32, n=128, reps=2) > 0
    with pytest.raises(ValueError, match="n >= 1"):
        gemm_ceiling(n=0)
    x = torch.randn(8)
    with pytest.raises(RuntimeError, match="no matrix-multiply, attention or convolution FLOPs"):
        count_gflop(lambda: x + 1)
    with pytest.raises(ValueError, match="steps >= 1"):
        gemm_seconds(lambda: None, steps=0)
