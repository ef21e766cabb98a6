"""Self-describing, atomically written checkpoints.

A checkpoint is a folder ``<run>/checkpoints/<step:08d>/`` holding
``model.safetensors`` (policy state_dict, normaliser buffers included), ``config.yaml`` (the resolved
run config), ``policy.json`` (``VLAPolicy.metadata()``: cfg, FeatureSpec, vocab), ``stats.json`` and,
for resuming, ``train_state.pt`` (optimizer, scheduler, step, RNG states, sampler position).

Every file is written into a hidden temporary folder beside the final one, fsynced, and the folder is
renamed into place; ``checkpoints/last`` is a symlink swapped by rename too. A crash at any point
leaves the previous checkpoint and ``last`` intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from vla.data.stats import Stats, stats_from_json, stats_to_json
from vla.types import ACTION_KEY, STATE_KEY, FeatureSpec

if TYPE_CHECKING:
    from vla.policy import VLAPolicy

CHECKPOINTS = "checkpoints"
LAST = "last"
WEIGHTS, CONFIG, POLICY, STATS, TRAIN_STATE = (
    "model.safetensors", "config.yaml", "policy.json", "stats.json", "train_state.pt")


class IncompatibleCheckpointError(ValueError):
    """The checkpoint was trained for other features, stats or architecture than it is asked to serve."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_folder_atomically(final: Path, fill: Callable[[Path], None]) -> Path:
    """Create folder ``final`` whole or not at all: ``fill(tmp)`` writes the files into a hidden temporary
    folder beside it, which is fsynced and renamed into place. An existing ``final`` is swapped out, so a
    crash never leaves neither copy; a failure leaves no partial folder behind."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        fill(tmp)
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        _fsync(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    policy: torch.nn.Module,
    *,
    config_yaml: str,
    stats: Stats,
    train_state: dict[str, Any] | None = None,
    keep_last: int = 0,
) -> Path:
    """Write checkpoint ``step`` of ``policy`` (unwrapped: not DDP/compiled); point ``last`` at it."""
    root = Path(run_dir) / CHECKPOINTS

    def fill(tmp: Path) -> None:
        save_model(policy, str(tmp / WEIGHTS), metadata={"step": str(step)})
        (tmp / CONFIG).write_text(config_yaml)
        (tmp / POLICY).write_text(json.dumps(policy.metadata(), indent=2))
        (tmp / STATS).write_text(json.dumps(stats_to_json(stats), indent=2))
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)

    final = write_folder_atomically(root / f"{step:08d}", fill)
    _point_last(root, final.name)
    if keep_last > 0:
        for old_ckpt in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old_ckpt)
    return final


def _point_last(root: Path, name: str) -> None:
    link = root / f".{LAST}-{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to(name)  # relative, so a run folder can be moved or copied whole
    os.replace(link, root / LAST)
    _fsync(root)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted writes are skipped)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit() and (p / WEIGHTS).is_file())


def last_checkpoint(run_dir: str | Path) -> Path | None:
    link = Path(run_dir) / CHECKPOINTS / LAST
    if link.is_dir() and (link / WEIGHTS).is_file():
        return link.resolve()
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder, a ``last`` link, or a run folder (meaning its last checkpoint)."""
    path = Path(path).expanduser()
    if (path / WEIGHTS).is_file():
        return path.resolve()
    found = last_checkpoint(path)
    if found is not None:
        return found
    raise FileNotFoundError(f"no checkpoint at {str(path)!r}: expected a folder with {WEIGHTS} (e.g. "
                            f"outputs/train/<date>/<time>/{CHECKPOINTS}/{LAST}) or a training run folder")


def read_metadata(path: str | Path) -> tuple[dict[str, Any], Stats]:
    ckpt = resolve_checkpoint(path)
    for name in (POLICY, STATS):
        if not (ckpt / name).is_file():
            raise FileNotFoundError(f"checkpoint {str(ckpt)!r} lacks {name}; "
                                    "it was not written by save_checkpoint")
    return json.loads((ckpt / POLICY).read_text()), stats_from_json(json.loads((ckpt / STATS).read_text()))


def check_compatible(meta_spec: FeatureSpec, spec: FeatureSpec) -> None:
    """Refuse a policy trained on ``meta_spec`` where ``spec`` describes the data; lists every mismatch."""
    problems = []
    missing = [c for c in meta_spec.cameras if c not in spec.cameras]
    if missing:
        problems.append(f"cameras {missing} used by the checkpoint are absent "
                        f"(available: {list(spec.cameras)})")
    for name in ("image_shape", "state_dim", "action_dim", "gripper_dims", "fps"):
        ours, theirs = getattr(meta_spec, name), getattr(spec, name)
        if ours != theirs:
            problems.append(f"{name}: checkpoint {ours} vs {theirs}")
    for name in ("state_names", "action_names"):
        ours, theirs = getattr(meta_spec, name), getattr(spec, name)
        if ours and theirs and tuple(ours) != tuple(theirs):
            problems.append(f"{name}: checkpoint {list(ours)} vs {list(theirs)}")
    if problems:
        raise IncompatibleCheckpointError(
            "checkpoint does not match the dataset/env features:\n  - " + "\n  - ".join(problems)
            + "\nuse a checkpoint trained on this robot/cameras or re-train on this data")


def check_stats(stats: Stats, spec: FeatureSpec) -> None:
    """Stats must cover state and action with the spec's dims (stats.json vs policy.json)."""
    for key, dim in ((STATE_KEY, spec.state_dim), (ACTION_KEY, spec.action_dim)):
        for name in ("mean", "std", "min", "max"):
            value = stats.get(key, {}).get(name)
            if value is None or value.numel() != dim:
                got = "missing" if value is None else f"{value.numel()} entries"
                raise IncompatibleCheckpointError(
                    f"stats[{key!r}][{name!r}] is {got}, the features need {dim}")


def load_weights(policy: torch.nn.Module, path: str | Path) -> None:
    """Load ``model.safetensors`` into ``policy``; refuses missing, unexpected or reshaped tensors by name."""
    ckpt = resolve_checkpoint(path)
    expected = policy.state_dict()
    with safe_open(str(ckpt / WEIGHTS), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    reshaped = [f"{k}: checkpoint {shapes[k]} vs model {tuple(v.shape)}"
                for k, v in expected.items() if k in shapes and shapes[k] != tuple(v.shape)]
    missing, unexpected = ([], []) if reshaped else load_model(policy, str(ckpt / WEIGHTS), strict=False)
    if reshaped or missing or unexpected:
        lines = ([f"shape mismatch {r}" for r in reshaped] + [f"missing in checkpoint: {k}" for k in missing]
                 + [f"unexpected in checkpoint: {k}" for k in unexpected])
        more = "\n  ..." if len(lines) > 20 else ""
        raise IncompatibleCheckpointError(
            f"weights in {str(ckpt)!r} do not fit this policy's architecture:\n  - "
            + "\n  - ".join(lines[:20]) + more + "\nrebuild the policy from the checkpoint's policy.json")


def load_policy(
    path: str | Path, device: str | torch.device = "cpu", spec: FeatureSpec | None = None
) -> VLAPolicy:
    """Rebuild a VLAPolicy from policy.json + model.safetensors, in eval mode on ``device``.

    With ``spec`` (from the dataset or env it will run on) the checkpoint is refused unless its
    features match. ``path`` may be a checkpoint folder, a ``last`` link or a run folder.
    """
    from vla.policy import VLAPolicy  # runtime import: checkpoint I/O stays light on import

    meta, stats = read_metadata(path)
    meta_spec = FeatureSpec.from_dict(meta["spec"])
    check_stats(stats, meta_spec)
    if spec is not None:
        check_compatible(meta_spec, spec)
    policy = VLAPolicy.from_metadata(meta, stats)
    load_weights(policy, path)
    return policy.to(device).eval()


def load_train_state(path: str | Path) -> dict[str, Any]:
    ckpt = resolve_checkpoint(path)
    if not (ckpt / TRAIN_STATE).is_file():
        raise FileNotFoundError(f"checkpoint {str(ckpt)!r} has no {TRAIN_STATE}; it cannot resume training "
                                "(start a new run, optionally with train.init_from=<checkpoint>)")
    # The file holds numpy/python RNG states besides tensors; it is our own output, so unpickling is fine.
    return torch.load(ckpt / TRAIN_STATE, map_location="cpu", weights_only=False)


def get_rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from: torch (CPU and each GPU), numpy, python."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a side job (validation, rollouts) without moving the training RNG streams."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
