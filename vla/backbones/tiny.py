"""From-scratch VLM: vision encoder -> MLP projector -> decoder-only language model.

Presets ``tiny`` (CPU-trainable) and ``small`` (one GPU) differ only in sizes (see ``backbone_preset``).

Early fusion (default) runs the LM over [visual tokens, instruction tokens, state token], or with
``token_order="text_first"`` over [instruction, visual, state]. Attention is causal, so the order
decides what can see what: image-first lets the instruction read the image, text-first lets the
image tokens be conditioned on the instruction. Cross fusion keeps only [instruction, state] in the
LM stream and inserts a cross-attention block to the visual tokens after every ``cross_every`` layers.
With ``grounding_slots > 0`` every layout also gets, just before the state token, one token per
grounding slot and camera (vla/backbones/grounding.py).

Instructions are right-padded inside a batch; padding is masked out as attention keys, and position
ids count real tokens only, so a sample's output does not depend on the other instructions in its batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vla.backbones import BackboneOutput, TextTokens
from vla.backbones.film import FiLMGenerator, InstructionEncoder
from vla.backbones.grounding import GroundingAttention
from vla.backbones.layers import Block, RMSNorm, Rotary, causal_mask
from vla.backbones.vision import Projector, VisionEncoder
from vla.model_config import BackboneConfig
from vla.tokenizer import WordTokenizer
from vla.types import FeatureSpec


class ScratchVLM(nn.Module):
    def __init__(self, cfg: BackboneConfig, spec: FeatureSpec, vocab: list[str]) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_model = cfg.d_model
        self.n_cameras = len(spec.cameras)
        self.tokenizer = WordTokenizer(vocab)
        self.vision = VisionEncoder(cfg, spec.image_shape[1:])
        self.projector = Projector(cfg.d_vision, cfg.d_model)
        # Shared vision weights across cameras; this embedding is what tells the cameras apart.
        self.camera_embed = nn.Parameter(torch.randn(self.n_cameras, cfg.d_model) * 0.02)
        self.token_embed = nn.Embedding(len(self.tokenizer), cfg.d_model)
        self.state_proj = nn.Linear(spec.state_dim, cfg.d_model)
        self.n_visual = self.n_cameras * self.vision.num_patches
        self.n_grounding = self.n_cameras * cfg.grounding_slots
        if cfg.pos_encoding == "learned":
            in_stream = cfg.max_text_len + 2 + self.n_grounding + (self.n_visual if cfg.fusion == "early" else 0)
            self.pos_embed = nn.Parameter(torch.randn(in_stream, cfg.d_model) * 0.02)
            self.rotary = None
        else:
            self.rotary = Rotary(cfg.d_model // cfg.n_heads)
        block_kw = dict(norm="rms", mlp=cfg.mlp, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, **block_kw) for _ in range(cfg.n_layers))
        # cross_blocks[str(i)] runs after LM layer i.
        self.cross_blocks = nn.ModuleDict()
        if cfg.fusion == "cross":
            for i in range(cfg.cross_every - 1, cfg.n_layers, cfg.cross_every):
                self.cross_blocks[str(i)] = Block(
                    cfg.d_model, cfg.n_heads, self_attn=False, cross_attn=True, **block_kw
                )
        self.norm = RMSNorm(cfg.d_model)
        self.instruction_encoder: InstructionEncoder | None = None
        self.film: FiLMGenerator | None = None
        self.grounding: GroundingAttention | None = None
        if cfg.vision_film or cfg.grounding_slots:
            self.instruction_encoder = InstructionEncoder(
                cfg.d_model, cfg.n_heads, cfg.mlp, cfg.mlp_ratio, summary=cfg.vision_film
            )
        if cfg.vision_film:
            self.film = FiLMGenerator(cfg.d_model, self.vision.film_channels)
        if cfg.grounding_slots:
            self.grounding = GroundingAttention(
                cfg.d_model, self.vision.feature_channels, cfg.grounding_slots, self.n_cameras
            )
        self.apply(_init_weights)
        if self.film is not None:
            self.film.start_as_identity()  # _init_weights drew them at random
        if self.grounding is not None:
            self.grounding.reset_parameters()  # same: its own init, not the 0.02 of the rest

    def encode_images(
        self, images: torch.Tensor, film: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3, H, W) -> (B, N * P, d_model) projected visual tokens with camera embeddings, and the
        (B * N, C, h, w) conv-stem features they were patchified from.

        ``film`` holds per-sample (B, C) modulations; every camera of a sample gets its sample's.
        """
        b, n = images.shape[:2]
        if n != self.n_cameras:
            raise ValueError(f"got {n} camera images, the backbone was built for {self.n_cameras}")
        if film is not None:
            film = [(scale.repeat_interleave(n, 0), shift.repeat_interleave(n, 0)) for scale, shift in film]
        features = self.vision.stem_features(images.flatten(0, 1), film)
        tokens = self.projector(self.vision.patch_tokens(features, film))  # (B*N, P, d)
        tokens = tokens.view(b, n, -1, self.d_model) + self.camera_embed[None, :, None, :]
        return tokens.flatten(1, 2), features

    @property
    def max_text_tokens(self) -> int:
        """Longest tokenized instruction: ``max_text_len`` words and <bos>."""
        return self.cfg.max_text_len + 1

    def tokenize(self, tasks: list[str], length: int | None = None) -> TextTokens:
        """Instructions -> ``TextTokens`` on the CPU, right-padded to ``length`` (default: the longest)."""
        ids, valid = self.tokenizer.encode_batch(tasks, self.cfg.max_text_len)
        if length is not None:
            if length < ids.shape[1]:
                raise ValueError(f"length={length} is shorter than the tokenized instructions ({ids.shape[1]})")
            ids = F.pad(ids, (0, length - ids.shape[1]), value=self.tokenizer.pad_id)
            valid = F.pad(valid, (0, length - valid.shape[1]), value=False)
        return TextTokens(ids, valid)

    def _read_instruction(self, tasks: list[str] | TextTokens, images: torch.Tensor) -> _Instruction:
        tokens = tasks if isinstance(tasks, TextTokens) else self.tokenize(tasks)
        if tokens.ids.shape[0] != images.shape[0]:
            raise ValueError(
                f"batch['task'] has {tokens.ids.shape[0]} instructions for a batch of {images.shape[0]}"
            )
        # A no-op for TextTokens already on the device (a captured CUDA graph must not copy here).
        ids, text_valid = tokens.ids.to(images.device), tokens.valid.to(images.device)
        text = self.token_embed(ids)
        film, words = None, None
        if self.instruction_encoder is not None:
            words = self.instruction_encoder.contextual(text, text_valid)
            if self.film is not None:
                film = self.film(self.instruction_encoder.pool(words, text_valid))
        return _Instruction(text, text_valid, words, film)

    def forward(self, images: torch.Tensor, tasks: list[str] | TextTokens, state: torch.Tensor) -> BackboneOutput:
        text, text_valid, words, film = self._read_instruction(tasks, images)
        visual, features = self.encode_images(images, film)
        state_tok = self.state_proj(state)[:, None]
        if self.cfg.fusion == "cross":
            parts = [(text, text_valid)]
        elif self.cfg.token_order == "image_first":
            parts = [(visual, _all_valid(visual)), (text, text_valid)]
        else:
            parts = [(text, text_valid), (visual, _all_valid(visual))]
        grounding_logits = None
        if self.grounding is not None and words is not None:
            # Just before the state token, so under causal attention the state token and every later
            # reader see where the named object and target are, whatever the token order.
            grounded, grounding_logits = self.grounding(features, words, text_valid)
            parts.append((grounded, _all_valid(grounded)))
        parts.append((state_tok, _all_valid(state_tok)))
        x = torch.cat([p[0] for p in parts], dim=1)
        valid = torch.cat([p[1] for p in parts], dim=1)
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        rope = None
        if self.rotary is None:
            x = x + self.pos_embed[positions]
        else:
            rope = self.rotary(positions)
        mask = causal_mask(valid)
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, rope=rope)
            if str(i) in self.cross_blocks:
                # Every visual token is real, so the cross-attention needs no mask.
                x = self.cross_blocks[str(i)](x, memory=visual)
        return BackboneOutput(self.norm(x), valid, grounding_logits)


class _Instruction(NamedTuple):
    text: torch.Tensor  # (B, T, d) embedded words
    valid: torch.Tensor  # (B, T) True on real words
    words: torch.Tensor | None  # (B, T, d) contextual words, when FiLM or grounding reads them
    film: list[tuple[torch.Tensor, torch.Tensor]] | None


def _all_valid(tokens: torch.Tensor) -> torch.Tensor:
    return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
