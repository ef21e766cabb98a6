"""Config validation, presets, the yaml files that mirror them, and Hydra/OmegaConf compatibility."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from model_helpers import SPEC, VOCAB, make_stats
from omegaconf import OmegaConf

from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig, backbone_preset
from vla.policy import VLAPolicy

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(fusion="late"), "fusion"),
        (dict(token_order="random"), "token_order"),
        (dict(d_model=100, n_heads=3), "d_model"),
        (dict(n_layers=0), "n_layers"),
        (dict(fusion="cross", cross_every=9, n_layers=4), "cross_every"),
        (dict(kind="hf"), "path"),
        (dict(kind="hf", path="/x", fusion="cross"), "fusion"),
        (dict(kind="hf", path="/x", vision_film=True), "vision_film"),
        (dict(kind="hf", path="/x", grounding_slots=2), "grounding_slots"),
        (dict(grounding_slots=-1), "grounding_slots"),
        (dict(grounding_slots=1, grounding_loss_weight=1.0), "grounding_slots"),
        (dict(grounding_slots=2, grounding_loss_weight=-1.0), "grounding_loss_weight"),
        (dict(aug_brightness=1.5), "aug_brightness"),
        (dict(dropout=1.0), "dropout"),
        (dict(kind="clip"), "kind"),
        (dict(pos_encoding="alibi"), "pos_encoding"),
    ],
)
def test_bad_backbone_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BackboneConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(n_action_steps=20, chunk_size=10), "n_action_steps"),
        (dict(kind="diffusion"), "kind"),
        (dict(kind="flow", time_sampling="logit"), "time_sampling"),
        (dict(kind="flow", flow_target="x0"), "flow_target"),
        (dict(kind="l1", n_samples=4), "n_samples"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(d_model=30, n_heads=4), "d_model"),
    ],
)
def test_bad_head_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        HeadConfig(**kwargs)


def test_policy_config_dict_round_trip_and_unknown_keys() -> None:
    cfg = PolicyConfig(backbone_preset("small"), HeadConfig(kind="flow", n_samples=3))
    assert PolicyConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="d_modle"):
        PolicyConfig.from_dict({"backbone": {"d_modle": 3}, "head": {}})


def test_image_too_small_for_the_stem_is_explained() -> None:
    cfg = PolicyConfig(BackboneConfig(stem_channels=[8, 8, 8, 8], patch_size=4), HeadConfig())
    with pytest.raises(ValueError, match="patch_size"):
        VLAPolicy(cfg, SPEC, VOCAB, make_stats())


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_yaml_mirrors_the_preset(name: str) -> None:
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{name}.yaml"))
    assert BackboneConfig(**yaml) == backbone_preset(name)


def test_hf_yaml_requires_a_path_and_fills_the_schema() -> None:
    yaml = OmegaConf.load(CONF / "model" / "hf.yaml")
    assert OmegaConf.is_missing(yaml, "path")
    yaml.path = "/models/smolvlm"
    merged = OmegaConf.merge(OmegaConf.structured(BackboneConfig), yaml)
    assert OmegaConf.to_object(merged) == backbone_preset("hf", path="/models/smolvlm")


@pytest.mark.parametrize("name", ["l1", "flow"])
def test_head_yaml_builds_a_valid_head_config(name: str) -> None:
    merged = OmegaConf.merge(OmegaConf.structured(HeadConfig), OmegaConf.load(CONF / "head" / f"{name}.yaml"))
    head = OmegaConf.to_object(merged)
    assert isinstance(head, HeadConfig) and head.kind == name


def test_structured_config_validates_on_conversion() -> None:
    cfg = OmegaConf.structured(PolicyConfig)
    cfg.backbone.fusion = "sideways"
    with pytest.raises(ValueError, match="fusion"):
        OmegaConf.to_object(cfg)
    assert asdict(OmegaConf.to_object(OmegaConf.structured(PolicyConfig))) == asdict(PolicyConfig())
