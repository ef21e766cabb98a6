"""LeRobot's ACT and Diffusion Policy behind our policy contract, trained on our chunk batches.

A LeRobot policy is built from our dataset's FeatureSpec (cameras, state, action) and statistics, with
its own normalisation modes applied by its own pre/post-processor pipelines (ACT: mean/std everywhere;
Diffusion Policy: mean/std images, min/max state and action). Everything runs offline: no pretrained
backbone weights are fetched (``pretrained_backbone_weights=None``).

Mapping to the contract (``VLAPolicy``'s interface, so ``evaluate_policy`` drives it unchanged):

* ``forward(batch) -> (loss, terms)`` on our training batches (raw state/actions, images in [0, 1]);
* ``predict_chunk(batch)`` -> (B, H, A) unnormalised actions on the host, gripper dims clipped to [0, 1].
  It calls LeRobot's ``predict_action_chunk`` and never their ``select_action``: theirs keeps its own
  action queue (and, for Diffusion Policy, an observation-history queue) that would act on stale
  chunks once our gate or control loop decides when to ask for one. Diffusion Policy is reset before
  each call so that it reads the batch given, not its history queue;
* ``select_action`` keeps our own queue of ``n_action_steps`` like VLAPolicy; ``reset`` clears it and
  theirs; ``stochastic`` is False (the gate scores chunk consistency, as for the l1 head).

Neither policy reads the instruction (``uses_language = False``): on tasks where the instruction picks
the object, they can only guess.

Diffusion Policy runs with one observation step (``n_obs_steps=1``, like every other compared method):
the gate asks for a chunk only every ``n_action_steps`` ticks, so a history queue fed at those calls
would hold frames ``n_action_steps`` apart instead of the consecutive frames it was trained on. Its
horizon is the chunk length rounded up to what its U-Net's down-sampling accepts.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import Any

import torch
from torch import nn

from vla.types import ACTION_KEY, STATE_KEY, TASK_KEY, FeatureSpec

LEROBOT_KINDS = ("act", "diffusion")
Stats = dict[str, dict[str, torch.Tensor]]


def image_stats(images: dict[str, torch.Tensor], max_frames: int = 2000) -> Stats:
    """Per-camera, per-channel mean/std/min/max of uint8 (N, 3, H, W) frames in [0, 1] units, shape (3, 1, 1).

    LeRobot normalises images with dataset statistics of this shape; an even subsample of frames keeps
    the cost flat for large datasets.
    """
    out: Stats = {}
    for key, frames in images.items():
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"{key}: expected (N, 3, H, W) frames, got shape {tuple(frames.shape)}")
        idx = torch.linspace(0, frames.shape[0] - 1, min(max_frames, frames.shape[0])).long()
        x = frames.index_select(0, idx).double() / 255.0
        out[key] = {
            "mean": x.mean((0, 2, 3)).float().view(3, 1, 1),
            "std": x.std((0, 2, 3), correction=0).float().view(3, 1, 1),
            "min": x.amin((0, 2, 3)).float().view(3, 1, 1),
            "max": x.amax((0, 2, 3)).float().view(3, 1, 1),
        }
    return out


def _features(spec: FeatureSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    from lerobot.configs import FeatureType, PolicyFeature

    inputs = {k: PolicyFeature(FeatureType.VISUAL, tuple(spec.image_shape)) for k in spec.image_keys()}
    inputs[STATE_KEY] = PolicyFeature(FeatureType.STATE, (spec.state_dim,))
    return inputs, {ACTION_KEY: PolicyFeature(FeatureType.ACTION, (spec.action_dim,))}


def _config_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def lerobot_config(
    kind: str,
    spec: FeatureSpec,
    chunk_size: int,
    n_action_steps: int,
    device: str,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """ACTConfig / DiffusionConfig for our features: LeRobot's defaults, offline, our chunking.

    ``overrides`` set any field of the config, e.g. ``{"dim_model": 256}``, ``{"num_inference_steps": 10}``.
    """
    if kind not in LEROBOT_KINDS:
        raise ValueError(f"unknown LeRobot policy {kind!r}; choose from {list(LEROBOT_KINDS)}")
    overrides = dict(overrides or {})
    inputs, outputs = _features(spec)
    if kind == "act":
        from lerobot.policies.act.configuration_act import ACTConfig as Config

        base: dict[str, Any] = dict(chunk_size=chunk_size, n_action_steps=n_action_steps)
    else:
        try:
            import diffusers  # noqa: F401  (LeRobot's Diffusion Policy needs it; check before building)
        except ImportError as exc:
            raise ImportError(
                "Diffusion Policy needs the diffusers package: pip install "
                "'lerobot[diffusion]==0.6.1' (or drop 'diffusion' from --methods)"
            ) from exc
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig as Config

        down_dims = tuple(overrides.get("down_dims", Config.down_dims))
        overrides["down_dims"] = down_dims
        factor = 2 ** len(down_dims)
        # From scratch, the Diffusion Policy recipe uses GroupNorm in the image encoder (BatchNorm is kept
        # only to match pretrained torchvision weights).
        base = dict(
            n_obs_steps=1,
            horizon=math.ceil(chunk_size / factor) * factor,
            n_action_steps=n_action_steps,
            use_group_norm=True,
        )
    unknown = sorted(set(overrides) - _config_fields(Config))
    if unknown:
        raise ValueError(
            f"unknown {kind} config field(s) {unknown}; valid fields are "
            f"{sorted(_config_fields(Config) - {'input_features', 'output_features'})}"
        )
    fixed = dict(
        input_features=inputs, output_features=outputs, pretrained_backbone_weights=None, device=device
    )
    clash = sorted(set(overrides) & set(fixed))
    if clash:
        raise ValueError(
            f"{kind} field(s) {clash} are set from the dataset and the device; do not override them"
        )
    return Config(**{**base, **overrides, **fixed})


class LeRobotPolicyAdapter(nn.Module):
    stochastic = False
    uses_language = False

    def __init__(
        self,
        kind: str,
        spec: FeatureSpec,
        stats: Stats,
        chunk_size: int,
        n_action_steps: int,
        device: str = "cpu",
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """``stats``: our state/action stats (mean/std/min/max) plus per-camera ``image_stats``."""
        super().__init__()
        cfg = lerobot_config(kind, spec, chunk_size, n_action_steps, device, overrides)
        missing = [k for k in (*spec.image_keys(), STATE_KEY, ACTION_KEY) if k not in stats]
        if missing:
            raise ValueError(f"stats lack {missing}; pass state/action stats and image_stats() of the frames")
        if kind == "act":
            from lerobot.policies.act.modeling_act import ACTPolicy as Policy
            from lerobot.policies.act.processor_act import make_act_pre_post_processors as processors
        else:
            from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy as Policy
            from lerobot.policies.diffusion.processor_diffusion import (
                make_diffusion_pre_post_processors as processors,
            )
        self.kind, self.spec = kind, spec
        self.inner = Policy(cfg).to(device)
        self.preprocessor, self.postprocessor = processors(cfg, stats)
        self.n_action_steps = int(cfg.n_action_steps)
        # Actions per training sample: ACT's chunk, Diffusion Policy's whole horizon.
        self.chunk_size = int(cfg.chunk_size if kind == "act" else cfg.horizon)
        gripper = torch.zeros(spec.action_dim, dtype=torch.bool)
        gripper[list(spec.gripper_dims)] = True
        self.register_buffer("gripper", gripper, persistent=False)
        self._queue: deque[torch.Tensor] = deque()

    @property
    def config(self) -> Any:
        return self.inner.config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _inputs(self, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        keys = [*self.spec.image_keys(), STATE_KEY] + ([ACTION_KEY, "action_is_pad"] if training else [])
        missing = [k for k in keys if k not in batch]
        if missing:
            raise ValueError(f"batch lacks {missing}; the {self.kind} policy was built for {keys}")
        out = {k: batch[k] for k in keys}
        out[TASK_KEY] = batch.get(TASK_KEY, [""] * len(batch[STATE_KEY]))  # carried along, never read
        processed = self.preprocessor(out)
        if self.kind == "diffusion":
            # Diffusion Policy stacks (B, n_obs_steps, ...) observations; images get that axis inside.
            processed[STATE_KEY] = processed[STATE_KEY].unsqueeze(1)
        return processed

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        h = batch[ACTION_KEY].shape[1]
        if h != self.chunk_size:
            raise ValueError(
                f"batch['action'] holds chunks of {h} actions; the {self.kind} policy trains on "
                f"{self.chunk_size} (build the ChunkDataset with chunk_size=adapter.chunk_size)"
            )
        loss, out = self.inner.forward(self._inputs(batch, training=True))
        return loss, {"loss": loss.item(), **{k: float(v) for k, v in (out or {}).items()}}

    @torch.no_grad()
    def predict_chunk(self, batch: dict[str, Any], *, n_samples: int = 1, **kw: Any) -> torch.Tensor:
        """(B, H, A) unnormalised actions on the host (H: ACT's chunk, Diffusion Policy's executed steps)."""
        if n_samples != 1:
            raise ValueError(
                f"n_samples={n_samples}: the {self.kind} adapter draws one chunk per call "
                "(stochastic=False); use the consistency risk score"
            )
        if self.kind == "diffusion":
            self.inner.reset()  # empty history queue: predict_action_chunk then reads this batch
        chunk = self.inner.predict_action_chunk(self._inputs(batch, training=False))
        actions = self.postprocessor(chunk).float()
        grip = self.gripper.to(actions.device)
        return torch.where(grip, actions.clamp(0.0, 1.0), actions)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, A) action for this control step; a new chunk is predicted every ``n_action_steps`` calls."""
        if not self._queue:
            chunk = self.predict_chunk(batch)
            self._queue.extend(chunk[:, : self.n_action_steps].unbind(dim=1))
        return self._queue.popleft()

    def reset(self) -> None:
        self._queue.clear()
        self.inner.reset()
