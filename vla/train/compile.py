"""Regional ``torch.compile`` of a policy: its transformer layers and conv stems, not its whole forward.

Compiling ``VLAPolicy.forward`` as one region does not work: the forward reads ``batch["task"]``, a list
of instruction strings, and TorchDynamo guards on string values, so every new mix of instructions in a
batch recompiles until ``recompile_limit`` (8) is hit and the forward silently drops back to eager, after
minutes spent compiling. Tokenisation, normalisation and masking are cheap Python; the time goes into
the repeated layers. Compiling each layer in place (``nn.Module.compile``) leaves the strings outside
every compiled region, and identical layers share their compiled code, so compilation stays short.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vla.backbones.layers import Block
from vla.backbones.vision import VisionEncoder

# transformers names its repeated layers ...EncoderLayer / ...DecoderLayer (SigLIP, Llama, Idefics3, ...).
_HF_LAYER_SUFFIXES = ("EncoderLayer", "DecoderLayer")


def compile_regions(model: nn.Module, **compile_kwargs: Any) -> list[str]:
    """Compile every transformer layer and conv stem of ``model`` in place; return their module names.

    ``compile_kwargs`` go to ``torch.compile`` (``backend``, ``mode``, ``dynamic``...). A module inside
    one already compiled is left alone. Weights and state dicts are untouched, so checkpoints and the
    weight average see the same parameters as without compilation.
    """
    compiled: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(done + ".") for done in compiled):
            continue
        if isinstance(module, Block) or type(module).__name__.endswith(_HF_LAYER_SUFFIXES):
            module.compile(**compile_kwargs)
            compiled.append(name)
        elif isinstance(module, VisionEncoder):
            # The stem runs layer by layer (FiLM goes between them), not through its Sequential's forward:
            # compile that method so its convolutions, norms and activations fuse as one region. Its
            # transformer layers are Blocks and get compiled on their own as the walk goes on.
            module.stem_features = torch.compile(module.stem_features, **compile_kwargs)
            compiled.append(f"{name}.stem")
    if not compiled:
        raise ValueError(
            f"found no transformer layer or conv stem to compile in {type(model).__name__}; "
            "set train.compile=false"
        )
    return compiled
