"""Fixtures for the model tests; builders live in model_helpers.py."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest
from model_helpers import write_tiny_idefics3


@pytest.fixture(scope="session")
def tiny_vlm_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("tiny_idefics3")
    write_tiny_idefics3(folder)
    return str(folder)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These models are tiny: one intra-op thread is as fast, and far faster when the CPU is shared
    (OpenMP workers spin-waiting for a busy core slow small ops by 10x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
