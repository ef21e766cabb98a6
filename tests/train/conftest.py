"""Fixtures for the training tests: the demo dataset of tests/data, loaded once, and a small policy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The demo-dataset builder is shared with the data tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from data_helpers import write_demos

from vla.data import FrameStore, load_frames


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demos(tmp_path_factory.mktemp("demos") / "pick")


@pytest.fixture(scope="session")
def store(demo_root: Path) -> FrameStore:
    return load_frames(demo_root)
