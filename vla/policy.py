"""VLAPolicy: normaliser + vision-language backbone + action head behind the fixed policy interface.

``forward`` gives the training loss, ``predict_chunk`` a chunk of unnormalised actions, and
``select_action`` one action per control step from a queue refilled every ``n_action_steps``.
The backbone runs once per ``predict_chunk`` call (its output is the "prefix"); the flow head reuses
it for every integration step and every sample. A policy is rebuilt from ``metadata()`` plus its
state_dict, which also carries the normalisation stats.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vla.backbones import BackboneOutput, TextTokens, build_backbone
from vla.backbones.grounding import pixels_to_cell
from vla.heads import build_head
from vla.heads.goal import KeyframeGoalHead
from vla.model_config import PolicyConfig
from vla.processing import ImageAugment, Normalizer
from vla.processing.relative import relative_pairs, to_absolute, to_relative
from vla.types import ACTION_KEY, GOAL_KEY, GOAL_PIXELS_KEY, STATE_KEY, TASK_KEY, FeatureSpec

METADATA_VERSION = 1


class VLAPolicy(nn.Module):
    def __init__(
        self,
        cfg: PolicyConfig,
        spec: FeatureSpec,
        vocab: list[str],
        stats: dict[str, dict[str, torch.Tensor]] | None,
    ) -> None:
        """``stats=None`` leaves placeholder statistics, to be filled by ``load_state_dict``."""
        super().__init__()
        self.cfg, self.spec, self.vocab = cfg, spec, list(vocab)
        self.normalizer = Normalizer(spec, stats)
        self.backbone = build_backbone(cfg.backbone, spec, self.vocab)
        self.head = build_head(cfg.head, spec, self.backbone.d_model)
        self.goal_head: KeyframeGoalHead | None = None
        if cfg.head.goal_loss_weight > 0:
            self.goal_head = KeyframeGoalHead(self.backbone.d_model, cfg.head.n_heads, spec.state_dim)
        b = cfg.backbone
        self.augment = ImageAugment(b.aug_shift_pad, b.aug_brightness, b.aug_contrast)
        self.relative_pairs = relative_pairs(spec) if cfg.head.relative_actions else None
        if self.relative_pairs is not None:
            # The same pairs as device index tensors (moved by .to()), for inference: indexing with Python
            # lists copies the indices to the device at every call, which a captured CUDA graph cannot do.
            action_dims, state_dims = self.relative_pairs
            self.register_buffer("relative_action_dims", torch.tensor(action_dims), persistent=False)
            self.register_buffer("relative_state_dims", torch.tensor(state_dims), persistent=False)
        self._queue: deque[torch.Tensor] = deque()

    # ----------------------------------------------------------------- inputs
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def stochastic(self) -> bool:
        """True when ``predict_chunk(n_samples>1)`` draws distinct chunks (flow head)."""
        return self.head.stochastic

    def _images(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, N_cams, 3, H, W) in spec.cameras order, augmented in training mode."""
        images = []
        for key in self.spec.image_keys():
            if key not in batch:
                raise ValueError(f"batch lacks {key!r}; the policy was built for cameras {list(self.spec.cameras)}")
            img = torch.as_tensor(batch[key], device=self.device)
            if img.ndim != 4 or tuple(img.shape[1:]) != tuple(self.spec.image_shape):
                raise ValueError(
                    f"batch[{key!r}] has shape {tuple(img.shape)}, expected (B, "
                    f"{', '.join(map(str, self.spec.image_shape))}) float in [0, 1]"
                )
            if not img.is_floating_point():
                raise ValueError(f"batch[{key!r}] has dtype {img.dtype}; convert images to float in [0, 1]")
            images.append(self.augment(img))
        return torch.stack(images, dim=1)

    def _tasks(self, batch: dict[str, Any], batch_size: int) -> list[str] | TextTokens:
        tasks = batch.get(TASK_KEY)
        if isinstance(tasks, TextTokens):  # already tokenized (vla/cuda_graph.py); the backbone checks its size
            return tasks
        if isinstance(tasks, str):
            tasks = [tasks] * batch_size
        if tasks is None or len(tasks) != batch_size:
            raise ValueError(f"batch[{TASK_KEY!r}] must be a list of {batch_size} instructions, got {tasks!r}")
        return list(tasks)

    def _state(self, batch: dict[str, Any], batch_size: int | None = None) -> torch.Tensor:
        if STATE_KEY not in batch:
            raise ValueError(f"batch lacks {STATE_KEY!r} (raw proprio state, shape (B, {self.spec.state_dim}))")
        state = torch.as_tensor(batch[STATE_KEY], device=self.device, dtype=torch.float32)
        if state.ndim != 2 or state.shape[1] != self.spec.state_dim or (
            batch_size is not None and state.shape[0] != batch_size
        ):
            raise ValueError(
                f"batch[{STATE_KEY!r}] has shape {tuple(state.shape)}, expected "
                f"({batch_size if batch_size is not None else 'B'}, {self.spec.state_dim})"
            )
        return state

    def encode(self, batch: dict[str, Any]) -> BackboneOutput:
        """Run the backbone once: the prefix every head call of this batch reads."""
        images = self._images(batch)
        state = self._state(batch, images.shape[0])
        tasks = self._tasks(batch, images.shape[0])
        return self.backbone(images, tasks, self.normalizer.normalize(STATE_KEY, state))

    def grounding_maps(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, N_cams, K, h, w): where each grounding slot looks in each camera (see vla/eval/slot_hits.py)."""
        logits = self.encode(batch).grounding_logits
        if logits is None:
            raise ValueError(f"{type(self.backbone).__name__} has no grounding slots; set model.grounding_slots>0")
        return logits.flatten(3).softmax(-1).view_as(logits)

    # ---------------------------------------------------------------- training
    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        actions = torch.as_tensor(batch[ACTION_KEY], device=self.device, dtype=torch.float32)
        h, a = self.cfg.head.chunk_size, self.spec.action_dim
        if actions.ndim != 3 or actions.shape[1:] != (h, a):
            raise ValueError(
                f"batch[{ACTION_KEY!r}] has shape {tuple(actions.shape)}, expected (B, {h}, {a}): "
                f"the dataset must deliver chunks of head.chunk_size={h} actions"
            )
        is_pad = batch.get("action_is_pad")
        if is_pad is None:
            is_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=self.device)
        is_pad = torch.as_tensor(is_pad, device=self.device).bool()
        prefix = self.encode(batch)
        if self.relative_pairs is not None:
            actions = to_relative(actions, self._state(batch), self.relative_pairs)
        loss, terms = self.head.loss(prefix, self.normalizer.normalize(ACTION_KEY, actions), is_pad)
        if self.goal_head is not None:
            goal_l1 = self._goal_loss(prefix, batch)
            loss = loss + self.cfg.head.goal_loss_weight * goal_l1
            terms = {**terms, "goal_l1": goal_l1.item(), "loss": loss.item()}
        if self.cfg.backbone.grounding_loss_weight > 0:
            grounding_ce = self._grounding_loss(prefix, batch)
            loss = loss + self.cfg.backbone.grounding_loss_weight * grounding_ce
            terms = {**terms, "grounding_ce": grounding_ce.item(), "loss": loss.item()}
        return loss, terms

    def _grounding_loss(self, prefix: BackboneOutput, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy of slot 0's map (grasp) and slot 1's (release) against the stem cell under the hand's
        keyframe position, per camera, over the frames and cameras where that target exists and is in view.

        The random-shift augmentation moves the image (by up to ``aug_shift_pad`` pixels) under a target that
        stays put: at most about one cell of label noise at 64 px, accepted to keep the augmentation simple."""
        if GOAL_PIXELS_KEY not in batch or "goal_pixels_is_pad" not in batch:
            raise ValueError(
                f"model.grounding_loss_weight > 0 needs batch[{GOAL_PIXELS_KEY!r}] and batch['goal_pixels_is_pad']: "
                "build the data with ChunkDataset(..., keyframe_goals=True, keyframe_pixels=keyframe_pixels(...)), "
                "or set model.grounding_loss_weight=0"
            )
        logits = prefix.grounding_logits
        assert logits is not None  # grounding_loss_weight > 0 requires grounding slots (BackboneConfig)
        grid = tuple(logits.shape[-2:])
        pixels = torch.as_tensor(batch[GOAL_PIXELS_KEY], device=self.device, dtype=torch.float32)
        valid = ~torch.as_tensor(batch["goal_pixels_is_pad"], device=self.device).bool()  # (B, N, 2)
        target = pixels_to_cell(pixels, grid, tuple(self.spec.image_shape[1:]))  # (B, N, 2)
        ce = F.cross_entropy(logits[:, :, : target.shape[-1]].flatten(3).flatten(0, 2).float(), target.flatten(),
                             reduction="none").view_as(target)
        return (ce * valid).sum() / valid.sum().clamp_min(1)

    def _goal_loss(self, prefix: BackboneOutput, batch: dict[str, Any]) -> torch.Tensor:
        assert self.goal_head is not None
        if GOAL_KEY not in batch or "goal_is_pad" not in batch:
            raise ValueError(
                f"head.goal_loss_weight > 0 needs batch[{GOAL_KEY!r}] and batch['goal_is_pad'] (the keyframe "
                "states): build the data with ChunkDataset(..., keyframe_goals=True), or set head.goal_loss_weight=0"
            )
        goal = torch.as_tensor(batch[GOAL_KEY], device=self.device, dtype=torch.float32)
        is_pad = torch.as_tensor(batch["goal_is_pad"], device=self.device).bool()
        return self.goal_head.loss(prefix, self.normalizer.normalize(STATE_KEY, goal), is_pad)

    # --------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_chunk(
        self,
        batch: dict[str, Any],
        *,
        n_samples: int = 1,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        prefix: BackboneOutput | None = None,
    ) -> torch.Tensor:
        """Unnormalised action chunk(s), gripper dims in {0, 1}.

        Returns (B, H, A) when ``n_samples == 1`` and (B, n_samples, H, A) when ``n_samples > 1``
        (flow head only; the samples come from one batched integration over a single backbone pass).
        ``num_steps`` overrides the flow head's Euler steps; ``generator`` makes the noise reproducible;
        ``prefix`` (from ``encode``) skips the backbone when the caller already ran it for this batch.
        """
        if prefix is None:
            prefix = self.encode(batch)
        chunks = self.head.sample(prefix, n_samples=n_samples, num_steps=num_steps, generator=generator)
        chunks = self.normalizer.unnormalize(ACTION_KEY, chunks)
        if self.relative_pairs is not None:
            pairs = (self.relative_action_dims, self.relative_state_dims)
            chunks = to_absolute(chunks, self._state(batch), pairs)
        return chunks[:, 0] if n_samples == 1 else chunks

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, A) action for this control step; a new chunk is predicted every ``n_action_steps`` calls."""
        if not self._queue:
            chunk = self.predict_chunk(batch)
            self._queue.extend(chunk[:, : self.cfg.head.n_action_steps].unbind(dim=1))
        return self._queue.popleft()

    def reset(self) -> None:
        """Forget queued actions (call at the start of every episode)."""
        self._queue.clear()

    # ------------------------------------------------------------ description
    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description that, with the state_dict, rebuilds this policy."""
        return {
            "format_version": METADATA_VERSION,
            "cfg": self.cfg.to_dict(),
            "spec": self.spec.to_dict(),
            "vocab": list(self.vocab),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], stats: dict[str, dict[str, torch.Tensor]] | None = None) -> VLAPolicy:
        """Rebuild an identically shaped policy; load the state_dict afterwards for weights and stats."""
        missing = [k for k in ("cfg", "spec", "vocab") if k not in meta]
        if missing:
            raise ValueError(f"policy metadata lacks {missing}; it must come from VLAPolicy.metadata()")
        version = meta.get("format_version", METADATA_VERSION)
        if version != METADATA_VERSION:
            raise ValueError(f"policy metadata format_version={version}, this code reads {METADATA_VERSION}")
        return cls(PolicyConfig.from_dict(meta["cfg"]), FeatureSpec.from_dict(meta["spec"]), meta["vocab"], stats)
