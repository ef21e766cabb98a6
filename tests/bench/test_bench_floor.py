"""The training-step floor: profiler-counted matmul FLOPs and the GEMM ceiling they are divided by."""

from __future__ import annotations

import pytest
import torch

from vla.baselines.floor import MatmulWork, gemm_ceiling, matmul_work


def test_matmul_work_counts_the_flops_of_known_products():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    w = torch.randn(16, 8, requires_grad=True)

    def step() -> None:
        (a @ b @ w).sum().backward()  # forward: 64x32x16 and 64x16x8; backward: dL/dw = (a@b)^T @ dL/dy

    work = matmul_work(step, steps=2)
    expected = 2 * (64 * 32 * 16 + 64 * 16 * 8 + 16 * 64 * 8)
    assert work.gflop * 1e9 == pytest.approx(expected, rel=0.01)
    assert work.seconds > 0 and work.gflop_per_s > 0


def test_floor_is_the_work_at_the_ceiling():
    work = MatmulWork(gflop=10.0, seconds=0.05)
    assert work.gflop_per_s == pytest.approx(200.0)
    assert work.floor_ms(250.0) == pytest.approx(40.0)


def test_gemm_ceiling_is_a_rate_and_refuses_bad_sizes():
    assert gemm_ceiling(torch.float32, n=128, reps=2) > 0
    with pytest.raises(ValueError, match="n >= 1"):
        gemm_ceiling(n=0)


def test_a_step_without_matmuls_is_refused():
    x = torch.randn(8)
    with pytest.raises(RuntimeError, match="no matrix-multiply FLOPs"):
        matmul_work(lambda: x + 1, steps=1)
    with pytest.raises(ValueError, match="steps >= 1"):
        matmul_work(lambda: None, steps=0)
