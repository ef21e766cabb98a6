"""Pretrained Idefics3 / SmolVLM backbone loaded from a local folder (never from the network).

The prompt is assembled directly as token ids in the model's own image format
(``<fake_token_around_image><global-img><image>*image_seq_len<fake_token_around_image>`` per camera,
no image splitting) and the images are resized and normalised on the tensor's device, so the whole
path stays differentiable and never round-trips through PIL. The instruction is tokenised by the
model's own tokenizer; a learned projection of the proprio state is appended as the last token. The
LM's last hidden states are the backbone output.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vla.backbones import BackboneOutput, TextTokens
from vla.model_config import BackboneConfig
from vla.types import FeatureSpec


def _load(path: str) -> tuple[nn.Module, object]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"model.path={path!r} is not a local model folder (no config.json); download the "
            "model once with `hf download <repo> --local-dir <folder>` and point model.path at it"
        )
    # A local folder must never trigger a hub request, even if the caller forgot HF_HUB_OFFLINE.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    if getattr(model.config, "model_type", "") not in ("idefics3", "smolvlm"):
        raise ValueError(
            f"model.path={path!r} holds a {model.config.model_type!r} model; the hf backbone "
            "supports Idefics3 / SmolVLM checkpoints"
        )
    return model.model, processor  # the inner model: vision encoder, connector, text model (no LM head)


class HFBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig, spec: FeatureSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.vlm, processor = _load(cfg.path)
        self.tokenizer = processor.tokenizer
        vision_cfg = self.vlm.config.vision_config
        self.image_size = int(vision_cfg.image_size)
        self.image_seq_len = int(self.vlm.image_seq_len)
        image_proc = processor.image_processor
        self.register_buffer("pixel_mean", torch.tensor(image_proc.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(image_proc.image_std).view(1, 3, 1, 1), persistent=False)
        ids = self.tokenizer.convert_tokens_to_ids
        self.image_token_id = int(self.vlm.config.image_token_id)
        unk = self.tokenizer.unk_token_id
        fake, glob = ids("<fake_token_around_image>"), ids("<global-img>")
        if fake in (None, unk) or glob in (None, unk):
            raise ValueError(
                f"the tokenizer in {cfg.path!r} lacks <fake_token_around_image> / <global-img>; "
                "it is not an Idefics3 / SmolVLM processor"
            )
        self.camera_ids = [fake, glob] + [self.image_token_id] * self.image_seq_len + [fake]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.bos_id = self.tokenizer.bos_token_id
        self.n_cameras = len(spec.cameras)
        self.d_model = int(self.vlm.config.text_config.hidden_size)
        self.state_proj = nn.Linear(spec.state_dim, self.d_model)
        self._warned_truncation = False
        self._set_trainable()

    def _set_trainable(self) -> None:
        """freeze_vision; LoRA adapters on a frozen LM; train_top_k_layers unfreezes the top k LM layers.

        Without LoRA, -1 trains the whole LM and 0 freezes it. With LoRA, -1 and 0 train the adapters
        only and k > 0 also trains the full weights of the top k layers.
        """
        cfg, text = self.cfg, self.vlm.text_model
        if cfg.freeze_vision:
            self.vlm.vision_model.requires_grad_(False)
        k = cfg.train_top_k_layers
        layers = list(text.layers)
        if k > len(layers):
            raise ValueError(f"train_top_k_layers={k} exceeds the {len(layers)} LM layers of {cfg.path!r}")
        if cfg.lora_r > 0:
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_target_modules))
            inject_adapter_in_model(lora, text)
            for name, param in text.named_parameters():
                param.requires_grad_("lora_" in name)
        elif k != -1:
            text.requires_grad_(False)
        if k > 0:
            for layer in layers[-k:]:
                layer.requires_grad_(True)
            text.norm.requires_grad_(True)

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(0, 1)
        if flat.shape[-2:] != (self.image_size, self.image_size):
            flat = F.interpolate(flat, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        flat = (flat - self.pixel_mean) / self.pixel_std
        return flat.to(self.vlm.dtype)

    def _input_ids(self, tasks: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.camera_ids * self.n_cameras
        bos = [self.bos_id] if self.bos_id is not None else []
        seqs = []
        for text_ids in self.tokenizer(list(tasks), add_special_tokens=False)["input_ids"]:
            if len(text_ids) > self.cfg.max_text_len and not self._warned_truncation:
                warnings.warn(
                    f"instruction(s) longer than max_text_len={self.cfg.max_text_len} tokens are "
                    "truncated; raise model.max_text_len to keep them whole",
                    stacklevel=2,
                )
                self._warned_truncation = True
            text_ids = text_ids[: self.cfg.max_text_len]  # counted in the model's own tokens here
            body = images + text_ids if self.cfg.token_order == "image_first" else text_ids + images
            seqs.append(bos + body)
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        valid = torch.zeros((len(seqs), length), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            valid[i, : len(s)] = True
        return ids.to(device), valid.to(device)

    def forward(self, images: torch.Tensor, tasks: list[str], state: torch.Tensor) -> BackboneOutput:
        if isinstance(tasks, TextTokens) or not isinstance(tasks, (list, tuple)):
            raise ValueError(
                f"the hf backbone reads instructions as a list of strings (its processor interleaves them with "
                f"image tokens), got {type(tasks).__name__}; pre-tokenized instructions and CUDA-graph inference "
                "need the from-scratch backbone (model=tiny or model=small)"
            )
        if images.shape[1] != self.n_cameras:
            raise ValueError(f"got {images.shape[1]} camera images, the backbone was built for {self.n_cameras}")
        device = images.device
        ids, valid = self._input_ids(tasks, device)
        embeds = self.vlm.get_input_embeddings()(ids)
        # Vision encoder + connector called directly: get_image_features would drop an all-zero
        # (after normalisation, uniformly grey) camera frame as "padding" and break the token count.
        vision = self.vlm.vision_model(pixel_values=self._pixels(images)).last_hidden_state
        features = self.vlm.connector(vision).reshape(-1, self.d_model).to(embeds.dtype)
        embeds = embeds.masked_scatter((ids == self.image_token_id)[..., None], features)
        embeds = torch.cat([embeds, self.state_proj(state).to(embeds.dtype)[:, None]], dim=1)
        valid = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)
        # Position ids count real tokens, so the state token's position does not depend on padding.
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        out = self.vlm.text_model(
            inputs_embeds=embeds, attention_mask=valid.long(), position_ids=positions, use_cache=False
        )
        return BackboneOutput(out.last_hidden_state, valid)
