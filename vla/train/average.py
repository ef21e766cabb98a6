"""Uniform weight averaging of a run's checkpoints (a "checkpoint soup").

Late checkpoints of one run sit in the same basin; their uniform average is a cheap ensemble that
costs one forward pass. Each checkpoint already ships its EMA weights, so this widens the averaging
window from the EMA's ~1/(1-decay) steps to the span of the chosen checkpoints.

Only checkpoints of the same model on the same data average meaningfully: their ``policy.json``
(architecture, features, vocabulary) and ``stats.json`` must be identical, and every tensor must have
the same name, shape and dtype. The result is a complete checkpoint folder (weights, config, policy,
stats; no ``train_state.pt``, since an average cannot be resumed), written atomically by the same
``write_folder_atomically`` as ``save_checkpoint``'s.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vla.train.checkpoint import (
    CONFIG,
    POLICY,
    STATS,
    WEIGHTS,
    IncompatibleCheckpointError,
    resolve_checkpoint,
    write_folder_atomically,
)


def _same_metadata(ckpts: Sequence[Path]) -> None:
    first = ckpts[0]
    for name in (POLICY, STATS):
        reference = json.loads((first / name).read_text())
        for other in ckpts[1:]:
            if json.loads((other / name).read_text()) != reference:
                what = "architecture, features or vocabulary" if name == POLICY else "normalisation statistics"
                raise IncompatibleCheckpointError(
                    f"{name} of {str(other)!r} differs from {str(first)!r} ({what}): only checkpoints of one "
                    "model trained on one dataset can be averaged; pick checkpoints from the same run")


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of each floating tensor (accumulated in float64 on the CPU, cast back); other tensors must agree.
    Mismatches name the position of the offending state dict. The result is on the CPU."""
    if not state_dicts:
        raise ValueError("nothing to average: give at least one state dict")
    state_dicts = [{k: v.detach().cpu() for k, v in sd.items()} for sd in state_dicts]
    reference = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], start=1):
        if sd.keys() != reference.keys():
            diff = sorted(set(sd) ^ set(reference))[:5]
            raise IncompatibleCheckpointError(f"checkpoint {i} has other tensors than checkpoint 0, e.g. {diff}")
        for key, value in sd.items():
            ref = reference[key]
            if value.shape != ref.shape or value.dtype != ref.dtype:
                raise IncompatibleCheckpointError(
                    f"tensor {key!r}: checkpoint {i} has {tuple(value.shape)} {value.dtype}, "
                    f"checkpoint 0 has {tuple(ref.shape)} {ref.dtype}")
    out: dict[str, torch.Tensor] = {}
    for key, ref in reference.items():
        if ref.is_floating_point():
            total = torch.zeros(ref.shape, dtype=torch.float64)
            for sd in state_dicts:
                total += sd[key].to(torch.float64)
            out[key] = (total / len(state_dicts)).to(ref.dtype)
        else:  # integer buffers (e.g. counters, index tables) are not averaged: they must be equal
            for i, sd in enumerate(state_dicts[1:], start=1):
                if not torch.equal(sd[key], ref):
                    raise IncompatibleCheckpointError(
                        f"non-floating tensor {key!r} differs between checkpoint 0 and {i}; it cannot be averaged")
            out[key] = ref.clone()
    return out


def average_checkpoints(paths: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Average the weights of ``paths`` (checkpoint folders or ``last`` links) into a new checkpoint
    folder ``out_dir``, which must not exist yet. Returns ``out_dir``."""
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least 2 checkpoints, got {len(paths)}")
    ckpts = [resolve_checkpoint(p) for p in paths]
    if len(set(ckpts)) != len(ckpts):
        raise ValueError(f"the same checkpoint is listed twice in {[str(c) for c in ckpts]}; list each once")
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} exists; choose a new folder so no checkpoint is overwritten")
    _same_metadata(ckpts)
    try:
        averaged = average_state_dicts([load_file(str(c / WEIGHTS)) for c in ckpts])
    except IncompatibleCheckpointError as exc:  # say which folders "checkpoint i" are
        listing = "\n".join(f"  checkpoint {i}: {c}" for i, c in enumerate(ckpts))
        raise IncompatibleCheckpointError(f"{exc}\n{listing}") from exc
    sources = json.dumps([str(c) for c in ckpts])

    def fill(tmp: Path) -> None:
        save_file(averaged, str(tmp / WEIGHTS), metadata={"averaged_from": sources})
        for name in (CONFIG, POLICY, STATS):
            if (ckpts[0] / name).is_file():
                shutil.copyfile(ckpts[0] / name, tmp / name)

    return write_folder_atomically(out, fill)
