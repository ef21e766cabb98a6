"""Gate and eval configs: Hydra composition of conf/eval.yaml + gate group, typed errors, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ValidationError

from vla.supervision.config import (
    GateConfig,
    RiskConfig,
    SafetyConfig,
    SimulatedOperatorConfig,
    TerminalOperatorConfig,
    gate_config,
    register_configs,
    to_eval_config,
)

CONF = Path(__file__).resolve().parents[2] / "conf"


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


@pytest.mark.parametrize("gate", ["auto", "simulated", "terminal"])
def test_every_gate_preset_composes(gate):
    workers = "workers=1" if gate == "terminal" else "workers=2"
    cfg = to_eval_config(_compose(["checkpoint=ckpt", "env=pick_place", f"gate={gate}", "episodes=100", workers]))
    assert cfg.gate.operator.kind == gate and cfg.env.task == "pick_place" and cfg.episodes == 100
    assert cfg.seed_start == 100_000 and isinstance(cfg.gate, GateConfig)


def test_wrong_type_and_unknown_key_fail_with_the_key_named():
    for override, cause in (("episodes=many", ValidationError),
                            ("gate.operator.simulated.reaction_delay=soon", ValidationError),
                            ("gate.operator.simulated.reaction_dealy=2", ConfigAttributeError)):
        key = override.split("=")[0]
        with pytest.raises(ConfigCompositionException, match=key) as info:
            _compose(["checkpoint=x", "gate=simulated", override])
        assert isinstance(info.value.__cause__, cause)


def test_bad_values_say_how_to_fix_them():
    with pytest.raises(ValueError, match=r"gate\.operator\.kind='human'"):
        to_eval_config(_compose(["checkpoint=x", "gate.operator.kind=human"]))
    with pytest.raises(ValueError, match="workers=1"):
        to_eval_config(_compose(["checkpoint=x", "gate=terminal", "workers=2"]))
    with pytest.raises(ValueError, match="max_joint_speed"):
        SafetyConfig(max_joint_speed=0)
    with pytest.raises(ValueError, match="workspace_low"):
        SafetyConfig(workspace_low=[0, 0, 0])
    with pytest.raises(ValueError, match="low < high"):
        SafetyConfig(workspace_low=[0, 0, 0], workspace_high=[1, -1, 1])
    with pytest.raises(ValueError, match="n_samples"):
        RiskConfig(n_samples=1)
    with pytest.raises(ValueError, match="unknown trigger"):
        SimulatedOperatorConfig(triggers=["boredom"])
    with pytest.raises(ValueError, match="max_takeovers"):
        SimulatedOperatorConfig(max_takeovers=-2)
    with pytest.raises(ValueError, match="timeout_decision"):
        TerminalOperatorConfig(timeout_decision="shrug")
    with pytest.raises(ValueError, match=r"gate\.escalate"):
        GateConfig(escalate="sometimes")


def test_gate_config_from_a_partial_mapping():
    cfg = gate_config({"operator": {"kind": "simulated", "simulated": {"reaction_delay": 7}}})
    assert cfg.operator.kind == "simulated" and cfg.operator.simulated.reaction_delay == 7
    assert gate_config(None) == GateConfig()
