"""A straightforward transformers implementation of the VLA, the yardstick for training throughput.

It has the sizes and the sequence layout of a from-scratch VLAPolicy built from the same
``PolicyConfig`` -- vision width, depth and heads, the same number of patch tokens per camera, the
projector, the language model's width, depth, heads and MLP width, [visual, instruction, state]
tokens in the LM stream, and an L1 + gripper-BCE head of learned queries that cross-attend to the LM
output -- but it is assembled from stock classes as one would without tuning anything:
``SiglipVisionModel`` (linear patch embedding, as SigLIP) and ``LlamaModel`` from their configs,
random init, and ``nn.TransformerDecoder`` for the head. ``forward(batch)`` returns (loss, terms) on
the batches of the policy contract, so a benchmark can time both models in the same loop.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vla.backbones.vision import patch_grid
from vla.heads import gripper_mask, masked_mean
from vla.model_config import PolicyConfig
from vla.processing import Normalizer
from vla.tokenizer import WordTokenizer
from vla.types import ACTION_KEY, STATE_KEY, TASK_KEY, FeatureSpec


class ReferenceVLA(nn.Module):
    def __init__(
        self,
        cfg: PolicyConfig,
        spec: FeatureSpec,
        vocab: list[str],
        stats: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        from transformers import LlamaConfig, LlamaModel, SiglipVisionConfig, SiglipVisionModel

        super().__init__()
        b, h = cfg.backbone, cfg.head
        if b.kind != "scratch":
            raise ValueError(
                f"the reference mirrors the from-scratch backbone; got model.kind={b.kind!r}, "
                "use a preset such as 'tiny' or 'small'"
            )
        if b.fusion != "early" or b.token_order != "image_first":
            raise ValueError(
                "the reference implements early fusion with image-first token order; set "
                "fusion='early' and token_order='image_first'"
            )
        if h.kind != "l1":
            raise ValueError(f"the reference has an L1 head; got head.kind={h.kind!r}, set head.kind='l1'")
        _, height, width = spec.image_shape
        if height != width:
            raise ValueError(f"SiglipVisionModel takes square images; the spec has {height}x{width}")
        rows, cols = patch_grid(b, (height, width))
        if rows != cols or height % rows:
            raise ValueError(
                f"image size {height} does not split into the {rows}x{cols} patch grid of the "
                "from-scratch encoder; pick an image size divisible by that grid"
            )
        self.cfg, self.spec = cfg, spec
        self.tokenizer = WordTokenizer(vocab)
        self.normalizer = Normalizer(spec, stats)
        # One linear patch embedding with the patch size that yields the same token grid as the conv stem.
        vision_cfg = SiglipVisionConfig(
            hidden_size=b.d_vision,
            intermediate_size=4 * b.d_vision,
            num_hidden_layers=b.vision_layers,
            num_attention_heads=b.vision_heads,
            image_size=height,
            patch_size=height // rows,
            num_channels=3,
            attention_dropout=b.dropout,
            vision_use_head=False,
        )
        self.vision = SiglipVisionModel(vision_cfg)
        self.projector = nn.Sequential(
            nn.Linear(b.d_vision, b.d_model), nn.GELU(), nn.Linear(b.d_model, b.d_model)
        )
        self.camera_embed = nn.Parameter(torch.randn(len(spec.cameras), b.d_model) * 0.02)
        self.state_proj = nn.Linear(spec.state_dim, b.d_model)
        n_visual = len(spec.cameras) * rows * cols
        lm_cfg = LlamaConfig(
            vocab_size=len(self.tokenizer),
            hidden_size=b.d_model,
            intermediate_size=int(b.d_model * b.mlp_ratio),
            num_hidden_layers=b.n_layers,
            num_attention_heads=b.n_heads,
            num_key_value_heads=b.n_heads,
            max_position_embeddings=n_visual + b.max_text_len + 2,
            attention_dropout=b.dropout,
            tie_word_embeddings=False,
        )
        self.lm = LlamaModel(lm_cfg)
        d_head = h.d_model or b.d_model
        if d_head != b.d_model:
            raise ValueError(
                f"the reference head runs at the backbone width; set head.d_model=0 (got {h.d_model})"
            )
        self.queries = nn.Parameter(torch.randn(h.chunk_size, d_head) * 0.02)
        # 4x GELU feed-forward: the parameter count of the SwiGLU MLP (8/3 width, three matrices) of our head.
        layer = nn.TransformerDecoderLayer(
            d_head,
            h.n_heads,
            dim_feedforward=4 * d_head,
            dropout=h.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=h.n_layers, norm=nn.LayerNorm(d_head))
        self.out = nn.Linear(d_head, spec.action_dim)
        self.register_buffer("gripper", gripper_mask(spec), persistent=False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _hidden(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([batch[k] for k in self.spec.image_keys()], dim=1)  # (B, N, 3, H, W)
        n_batch, n_cam = images.shape[:2]
        pixels = (images.flatten(0, 1) - 0.5) / 0.5  # SigLIP's own image normalisation
        patches = self.vision(pixel_values=pixels).last_hidden_state
        visual = self.projector(patches).view(n_batch, n_cam, -1, self.cfg.backbone.d_model)
        visual = (visual + self.camera_embed[None, :, None, :]).flatten(1, 2)
        ids, text_valid = self.tokenizer.encode_batch(list(batch[TASK_KEY]), self.cfg.backbone.max_text_len)
        ids, text_valid = ids.to(images.device), text_valid.to(images.device)
        text = self.lm.embed_tokens(ids)
        state = self.normalizer.normalize(STATE_KEY, batch[STATE_KEY].float())
        x = torch.cat([visual, text, self.state_proj(state)[:, None]], dim=1)
        ones = torch.ones(n_batch, 1, dtype=torch.bool, device=x.device)
        valid = torch.cat([ones.expand(-1, visual.shape[1]), text_valid, ones], dim=1)
        hidden = self.lm(inputs_embeds=x, attention_mask=valid.long()).last_hidden_state
        return hidden, valid

    def _decode(self, batch: dict[str, Any]) -> torch.Tensor:
        hidden, valid = self._hidden(batch)
        queries = self.queries.expand(hidden.shape[0], -1, -1)
        return self.out(self.decoder(queries, hidden, memory_key_padding_mask=~valid))

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss as the l1 head's: L1 on continuous dims + BCE on gripper logits, padding masked."""
        pred = self._decode(batch)
        target = self.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY].float())
        valid = ~batch["action_is_pad"].bool()
        cont, grip = ~self.gripper, self.gripper
        l1 = masked_mean((pred[..., cont] - target[..., cont]).abs(), valid)
        bce = F.binary_cross_entropy_with_logits(pred[..., grip], target[..., grip], reduction="none")
        loss = l1 + self.cfg.head.gripper_loss_weight * masked_mean(bce, valid) if grip.any() else l1
        return loss, {"loss": loss.item(), "l1": l1.item()}

    @torch.no_grad()
    def predict_chunk(self, batch: dict[str, Any], **kw: Any) -> torch.Tensor:
        """(B, H, A) unnormalised chunk, gripper dims thresholded to {0, 1}."""
        pred = self._decode(batch)
        pred[..., self.gripper] = (torch.sigmoid(pred[..., self.gripper]) > 0.5).to(pred.dtype)
        return self.normalizer.unnormalize(ACTION_KEY, pred)
