"""Fixtures for the data tests: one small demo dataset per session, and its frames in memory."""

from __future__ import annotations

import pytest
from data_helpers import write_demos

from vla.data import FrameStore, load_frames


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory):
    return write_demos(tmp_path_factory.mktemp("demos") / "pick")


@pytest.fixture(scope="session")
def store(demo_root) -> FrameStore:
    return load_frames(demo_root)
