"""Typed configuration of the VLA model: backbone (vision + language), action head, and the pair.

All fields are flat so that ``conf/model/*.yaml`` (BackboneConfig) and ``conf/head/*.yaml`` (HeadConfig)
map one to one onto these dataclasses when Hydra's ConfigStore registers them. Every check in
``__post_init__`` names the field and says how to fix it, because a wrong value found at step 10k
costs far more than one found at start-up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

FUSIONS = ("early", "cross")
TOKEN_ORDERS = ("image_first", "text_first")
POS_ENCODINGS = ("rope", "learned")
MLP_KINDS = ("swiglu", "gelu")
TIME_SAMPLINGS = ("beta", "uniform")
FLOW_TARGETS = ("noise_minus_action", "action_minus_noise")
GOAL_FRAMES = ("before", "all")


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name}={value!r} is not supported; set {name} to one of {list(options)}")


def _positive(name: str, value: int | float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}; set {name} to a positive value")


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {where} field(s) {unknown}; valid fields are {sorted(known)}")
    return cls(**data)


@dataclass
class BackboneConfig:
    """Vision-language backbone.

    ``kind="scratch"`` builds the from-scratch VLM (conv-stem ViT -> MLP projector -> decoder-only LM);
    ``kind="hf"`` loads a pretrained Idefics3 / SmolVLM from the local folder ``path``.
    ``token_order`` only matters for early fusion (under cross fusion the image is not in the LM stream).
    The ``aug_*`` fields are the image augmentations the policy applies to itself in training mode.
    """

    kind: str = "scratch"
    # language model (scratch)
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp: str = "swiglu"
    mlp_ratio: float = 8 / 3  # SwiGLU's 8/3 keeps the parameter count of a 4x GELU MLP
    pos_encoding: str = "rope"
    max_text_len: int = 32  # instruction words kept (plus <bos>); longer ones are truncated with a warning
    # vision encoder (scratch): stride-2 3x3 convs, then a patchify conv, then a few transformer layers
    stem_channels: list[int] = field(default_factory=lambda: [32, 64])
    patch_size: int = 4
    patch_stride: int = 4
    d_vision: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    # fusion of vision and language
    fusion: str = "early"
    cross_every: int = 2
    token_order: str = "image_first"
    # FiLM: the instruction scales and shifts the vision encoder's channels (vla/backbones/film.py), so the
    # encoder can single out the named object among look-alikes instead of leaving the binding to the LM.
    vision_film: bool = False
    # Grounding: K instruction-conditioned slots attend over the conv stem's feature map and add one token
    # per slot and camera (attended features + expected image position; vla/backbones/grounding.py).
    # 0 turns it off; 2 gives one slot for the named object and one for the target to specialise into.
    grounding_slots: int = 0
    # > 0: supervise slot 0 with where the hand was at the demo's grasp and slot 1 at its release, projected
    # into each camera (vla/data/keyframes.py): cross-entropy over the stem cells, as Transporter networks
    # train their pick attention. A training-only loss; it needs grounding_slots >= 2 and the training env.
    grounding_loss_weight: float = 0.0
    dropout: float = 0.0
    # pretrained backbone (hf)
    path: str = ""
    freeze_vision: bool = True
    train_top_k_layers: int = -1  # -1: all LM layers train, 0: none, k: the top k
    lora_r: int = 0  # 0 disables LoRA
    lora_alpha: int = 16
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # training-time image augmentation (the policy applies it only in train mode)
    aug_shift_pad: int = 4
    aug_brightness: float = 0.2
    aug_contrast: float = 0.2

    def __post_init__(self) -> None:
        _choice("kind", self.kind, ("scratch", "hf"))
        _choice("fusion", self.fusion, FUSIONS)
        _choice("token_order", self.token_order, TOKEN_ORDERS)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("aug_shift_pad", "lora_r", "grounding_slots"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}; use 0 to disable it")
        if self.grounding_loss_weight < 0:
            raise ValueError(f"grounding_loss_weight must be >= 0 (0 disables it), got {self.grounding_loss_weight}")
        if self.grounding_loss_weight > 0 and self.grounding_slots < 2:
            raise ValueError(
                f"grounding_loss_weight > 0 supervises slot 0 (grasp) and slot 1 (release), so it needs "
                f"grounding_slots >= 2, got {self.grounding_slots}; set model.grounding_slots=2"
            )
        for name in ("aug_brightness", "aug_contrast"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1) (0 disables it), got {getattr(self, name)}")
        if self.kind == "hf":
            self._check_hf()
        else:
            self._check_scratch()

    def _check_scratch(self) -> None:
        _choice("mlp", self.mlp, MLP_KINDS)
        _choice("pos_encoding", self.pos_encoding, POS_ENCODINGS)
        for name in (
            "d_model",
            "n_layers",
            "n_heads",
            "d_vision",
            "vision_heads",
            "patch_size",
            "patch_stride",
            "max_text_len",
            "mlp_ratio",
        ):
            _positive(name, getattr(self, name))
        if self.vision_layers < 0:
            raise ValueError(f"vision_layers must be >= 0, got {self.vision_layers}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.d_vision % self.vision_heads:
            raise ValueError(f"d_vision={self.d_vision} must be divisible by vision_heads={self.vision_heads}")
        if self.pos_encoding == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"rotary positions need an even head width; d_model/n_heads="
                f"{self.d_model // self.n_heads} is odd, change d_model or n_heads"
            )
        if any(c <= 0 for c in self.stem_channels):
            raise ValueError(f"stem_channels must all be > 0, got {list(self.stem_channels)}")
        if self.fusion == "cross" and not 1 <= self.cross_every <= self.n_layers:
            raise ValueError(
                f"cross_every={self.cross_every} must be in [1, n_layers={self.n_layers}] "
                "so that at least one cross-attention block exists"
            )

    def _check_hf(self) -> None:
        if not self.path:
            raise ValueError(
                "kind='hf' needs path: set model.path to a local folder holding a pretrained "
                "Idefics3 / SmolVLM (config.json, weights, processor files)"
            )
        if self.vision_film:
            raise ValueError(
                "vision_film=true is only available for kind='scratch' (a pretrained vision tower has no "
                "FiLM layers); set model.vision_film=false"
            )
        if self.grounding_slots:
            raise ValueError(
                "grounding_slots > 0 is only available for kind='scratch' (it attends over the scratch "
                "encoder's conv-stem features); set model.grounding_slots=0"
            )
        if self.fusion != "early":
            raise ValueError(
                "fusion='cross' is only available for kind='scratch'; the hf backbone fuses "
                "early (visual tokens in the LM stream), set fusion='early'"
            )
        if self.train_top_k_layers < -1:
            raise ValueError(f"train_top_k_layers must be -1 (all), 0 (none) or k>0, got {self.train_top_k_layers}")
        if self.lora_r > 0 and not self.lora_target_modules:
            raise ValueError("lora_r > 0 needs lora_target_modules (e.g. ['q_proj', 'v_proj'])")
        _positive("lora_alpha", self.lora_alpha)


@dataclass
class HeadConfig:
    """Action head: predicts a chunk of ``chunk_size`` actions, of which ``n_action_steps`` are executed.

    ``d_model=0`` means "use the backbone width". Flow fields (``num_steps``, ``n_samples``, ``time_sampling``,
    ``flow_target``) are read only by ``kind="flow"``.
    """

    kind: str = "l1"
    chunk_size: int = 10
    n_action_steps: int = 5
    n_layers: int = 2
    d_model: int = 0
    n_heads: int = 4
    dropout: float = 0.0
    gripper_loss_weight: float = 1.0  # weight of the BCE gripper term next to the L1 term (l1 head)
    # > 0: an auxiliary head predicts the arm's state at the episode's grasp and release (vla/heads/goal.py),
    # a training-only loss that pushes the backbone to find the named object; 0 builds no such head.
    goal_loss_weight: float = 0.0
    # Which frames the goal loss counts a keyframe on: "before" (frames up to the keyframe: after it the
    # arm's own state gives the keyframe pose away) or "all" (every frame of the episode).
    goal_frames: str = "before"
    # Predict joint targets minus the current joint positions (vla/processing/relative.py). Needs the
    # feature names (dataset or env specs carry them); the Hydra head presets turn it on.
    relative_actions: bool = False
    # flow matching
    num_steps: int = 10
    n_samples: int = 1  # chunks drawn per call by risk scoring (disagreement between samples)
    time_sampling: str = "beta"
    flow_target: str = "noise_minus_action"

    def __post_init__(self) -> None:
        _choice("kind", self.kind, ("l1", "flow"))
        _choice("time_sampling", self.time_sampling, TIME_SAMPLINGS)
        _choice("flow_target", self.flow_target, FLOW_TARGETS)
        _choice("goal_frames", self.goal_frames, GOAL_FRAMES)
        for name in ("chunk_size", "n_action_steps", "n_layers", "n_heads", "num_steps", "n_samples"):
            _positive(name, getattr(self, name))
        if self.n_action_steps > self.chunk_size:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} exceeds chunk_size={self.chunk_size}; "
                "a chunk cannot execute more actions than it predicts"
            )
        if self.d_model < 0:
            raise ValueError(f"d_model must be >= 0 (0 = backbone width), got {self.d_model}")
        if self.d_model and self.d_model % self.n_heads:
            raise ValueError(f"head d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.gripper_loss_weight < 0:
            raise ValueError(f"gripper_loss_weight must be >= 0, got {self.gripper_loss_weight}")
        if self.goal_loss_weight < 0:
            raise ValueError(
                f"goal_loss_weight must be >= 0 (0 disables the keyframe-goal head), got {self.goal_loss_weight}"
            )
        if self.kind == "l1" and self.n_samples != 1:
            raise ValueError(
                "n_samples > 1 needs a stochastic head; the l1 head is deterministic, "
                "set head.n_samples=1 or head.kind='flow'"
            )


@dataclass
class PolicyConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        unknown = sorted(set(data) - {"backbone", "head"})
        if unknown:
            raise ValueError(f"unknown policy config field(s) {unknown}; expected 'backbone' and 'head'")
        return cls(
            backbone=_from_dict(BackboneConfig, dict(data.get("backbone", {})), "backbone"),
            head=_from_dict(HeadConfig, dict(data.get("head", {})), "head"),
        )


def backbone_preset(name: str, **overrides: Any) -> BackboneConfig:
    """The named backbone presets that ``conf/model/<name>.yaml`` mirror (a test keeps them in sync)."""
    presets: dict[str, dict[str, Any]] = {
        # ~2 M parameters with an l1 head: trains on a 2-core CPU. A 96x96 camera -> 48 -> 24 -> 6x6 patches.
        "tiny": {},
        # ~30 M parameters: sized for one GPU.
        "small": dict(
            d_model=384,
            n_layers=8,
            n_heads=6,
            stem_channels=[32, 64, 128],
            patch_size=2,
            patch_stride=2,
            d_vision=256,
            vision_layers=4,
            vision_heads=4,
            dropout=0.1,
        ),
        "hf": dict(kind="hf", path=overrides.get("path", "")),
    }
    if name not in presets:
        raise ValueError(f"unknown backbone preset {name!r}; choose one of {sorted(presets)}")
    return BackboneConfig(**{**presets[name], **overrides})
