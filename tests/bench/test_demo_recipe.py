"""scripts/demo.py's recipes: which overrides each task gets (no stage is run here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pick_place_recipe_records_misses_and_trains_without_the_shift() -> None:
    demo = load_demo()
    assert demo.miss_prob(None, "auto", "pick_place") == 0.4
    assert "model.aug_shift_pad=0" in demo.grounding_args("auto", "pick_place")


def test_main_job_keeps_its_measured_recipe() -> None:
    demo = load_demo()  # PickCube's 90% was measured without misses and with the random shift
    assert demo.miss_prob(None, "auto", "pick_cube") == 0.0
    assert demo.grounding_args("auto", "pick_cube") == []


def test_explicit_miss_prob_wins_and_is_checked() -> None:
    demo = load_demo()
    assert demo.miss_prob(0.2, "auto", "pick_cube") == 0.2
    assert demo.miss_prob(0.0, "on", "pick_place") == 0.0
    with pytest.raises(SystemExit, match="--miss-prob must be in"):
        demo.miss_prob(1.5, "auto", "pick_place")
