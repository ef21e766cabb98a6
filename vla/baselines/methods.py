"""The methods ``scripts/bench_policies.py`` compares, each one recipe: model, optimiser, schedule, clipping.

* ``vla_l1`` / ``vla_flow``: our VLAPolicy with the l1 or flow head, the project's training recipe
  (``TrainConfig`` defaults: AdamW, warmup + cosine, gradient clipping at 1);
* ``act`` / ``diffusion``: LeRobot's ACT and Diffusion Policy with LeRobot's own recipe (their
  ``get_optimizer_preset`` / ``get_scheduler_preset`` and gradient clipping at their default norm).

Every method executes the same number of actions per chunk (the VLA head's ``n_action_steps``) and ACT
predicts the VLA's chunk length. A learning-rate warm-up is capped at a tenth of the step budget for
every method, so short budgets are not spent warming up.

Overrides (``--set``) are ``method.key=value``: for LeRobot methods any field of their config (e.g.
``act.optimizer_lr=1e-4``, ``diffusion.num_inference_steps=10``); for VLA methods ``model.<field>``,
``head.<field>`` or ``train.<field>`` (e.g. ``vla_l1.train.lr=1e-3``); the method ``vla`` applies to both
VLA heads.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from vla.config import TrainConfig
from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig, backbone_preset
from vla.types import FeatureSpec

METHODS = ("act", "diffusion", "vla_l1", "vla_flow")
LABELS = {
    "act": "ACT (LeRobot)",
    "diffusion": "Diffusion Policy (LeRobot)",
    "vla_l1": "VLA, l1 head (ours)",
    "vla_flow": "VLA, flow head (ours)",
}
Stats = dict[str, dict[str, torch.Tensor]]


@dataclass
class Recipe:
    name: str
    model: nn.Module  # the policy contract plus forward(batch) -> (loss, terms)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    grad_clip: float
    chunk_size: int  # actions per training sample
    uses_language: bool
    schedule: str  # "constant" or "warm-up N + cosine", for the report

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def describe(self) -> str:
        """The optimiser as the report states it, e.g. ``AdamW lr 0.0003, warm-up 300 + cosine, clip 1``."""
        # Schedulers keep the base rate as ``initial_lr``; ``lr`` is wherever the schedule is now.
        groups = [g for g in self.optimizer.param_groups if g["params"]]
        lrs = sorted({g.get("initial_lr", g["lr"]) for g in groups}, reverse=True)
        lr = " / ".join(f"{x:g}" for x in lrs)
        return f"{type(self.optimizer).__name__} lr {lr}, {self.schedule}, clip {self.grad_clip:g}"


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["act.dim_model=256", "vla.train.lr=1e-3"]`` -> ``{"act": {"dim_model": 256},
    "vla": {"train.lr": 1e-3}}``; values are Python literals, or strings when they do not parse as one."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, field = key.partition(".")
        if not sep or not dot or not field:
            raise ValueError(f"--set {item!r}: write METHOD.FIELD=VALUE, e.g. act.optimizer_lr=1e-4")
        if method not in (*METHODS, "vla"):
            raise ValueError(f"--set {item!r}: unknown method {method!r}; choose from {[*METHODS, 'vla']}")
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word, e.g. an activation name
        out.setdefault(method, {})[field] = value
    return out


def _split_vla(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {"model": {}, "head": {}, "train": {}}
    valid = {"model": BackboneConfig, "head": HeadConfig, "train": TrainConfig}
    for key, value in overrides.items():
        group, _, field = key.partition(".")
        if group not in groups:
            raise ValueError(f"VLA override {key!r}: write model.<field>, head.<field> or train.<field>")
        names = {f.name for f in fields(valid[group])}
        if field not in names:
            raise ValueError(
                f"VLA override {key!r}: {valid[group].__name__} has no field {field!r}; "
                f"valid fields are {sorted(names)}"
            )
        groups[group][field] = value
    return groups


def build_recipe(
    name: str,
    spec: FeatureSpec,
    stats: Stats,
    image_stats: Stats,
    vocab: list[str],
    steps: int,
    device: torch.device,
    preset: str = "tiny",
    overrides: dict[str, dict[str, Any]] | None = None,
    relative_stats: Stats | None = None,
) -> Recipe:
    """The model of method ``name`` on ``device``, with its optimiser and schedule for ``steps`` steps.

    ``relative_stats`` (action stats of relative chunks) makes our VLA predict joint targets relative
    to the current joints, as the training app does by default.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    overrides = overrides or {}
    # The chunking every method shares: the VLA head's, with the overrides given to both VLA heads.
    shared = HeadConfig(**{**_split_vla(overrides.get("vla", {}))["head"], "kind": "flow"})
    warmup_cap = steps // 10
    if name.startswith("vla"):
        from vla.policy import VLAPolicy
        from vla.train.optim import build_optimizer, build_scheduler

        vla = _split_vla({**overrides.get("vla", {}), **overrides.get(name, {})})
        relative = relative_stats is not None
        head = HeadConfig(**{"relative_actions": relative, **vla["head"], "kind": name.removeprefix("vla_")})
        cfg = PolicyConfig(backbone=backbone_preset(preset, **vla["model"]), head=head)
        train = TrainConfig(
            **{"warmup_steps": min(TrainConfig.warmup_steps, warmup_cap), **vla["train"], "steps": steps}
        )
        policy = VLAPolicy(cfg, spec, vocab, relative_stats if head.relative_actions else stats).to(device)
        opt = build_optimizer(policy, train.lr, train.weight_decay, (train.betas[0], train.betas[1]))
        sched = build_scheduler(opt, train.warmup_steps, steps, train.min_lr_ratio)
        schedule = f"warm-up {train.warmup_steps} + cosine to {train.min_lr_ratio:g}x"
        return Recipe(name, policy, opt, sched, train.grad_clip, head.chunk_size, True, schedule)

    from vla.baselines.cpu_kernels import convs_as_matmuls, with_fused_step
    from vla.baselines.lerobot_adapter import LeRobotPolicyAdapter

    own = dict(overrides.get(name, {}))
    if name == "diffusion" and "scheduler_warmup_steps" not in own:
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

        own["scheduler_warmup_steps"] = min(DiffusionConfig.scheduler_warmup_steps, warmup_cap)
    adapter = LeRobotPolicyAdapter(
        name, spec, {**stats, **image_stats}, shared.chunk_size, shared.n_action_steps, str(device), own
    )
    opt_cfg = adapter.config.get_optimizer_preset()
    opt = opt_cfg.build(adapter.inner.get_optim_params())
    if device.type == "cpu":  # same weights and function, CPU-friendly kernels (vla/baselines/cpu_kernels.py)
        convs_as_matmuls(adapter.inner)
        opt = with_fused_step(opt)
    sched_cfg = adapter.config.get_scheduler_preset()
    sched = sched_cfg.build(opt, steps) if sched_cfg is not None else None
    schedule = "constant" if sched_cfg is None else f"warm-up {sched_cfg.num_warmup_steps} + {sched_cfg.name}"
    clip = float(opt_cfg.grad_clip_norm)
    return Recipe(name, adapter, opt, sched, clip, adapter.chunk_size, False, schedule)
