"""One training loop for every compared method: same frames, same order, same steps, same batch size.

Batches come from the project's in-memory ``ChunkDataset`` and a ``ChunkBatchSampler`` seeded alike for
every method, so all of them see the same frames in the same order (only the chunk length each one
trains on differs). Each step is the one LeRobot's and our trainers run: forward (under bf16 autocast
when ``amp``, on CPU as on CUDA), backward, gradient clipping, optimiser step, schedule step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from vla.baselines.methods import Recipe
from vla.baselines.timing import synchronize
from vla.data.dataset import ChunkBatchSampler, ChunkDataset, FrameStore, images_to_float, make_loader
from vla.train.ema import WeightEMA


@dataclass(frozen=True)
class FitResult:
    steps: int
    final_loss: float  # mean over the last (up to) 20 steps
    samples_per_s: float  # over the steps after the first (which pays one-off allocation costs)
    seconds: float
    batch_size: int = 0  # 0 in reports written before it was recorded


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    moved = {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }
    return images_to_float(moved)


def fit(
    recipe: Recipe,
    store: FrameStore,
    steps: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    amp: bool = False,
    progress: bool = True,
    ema_decay: float = 0.0,
    dataset_options: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``recipe.model`` for ``steps`` steps. With ``ema_decay`` > 0 the model ends holding the
    exponential moving average of its weights (vla/train/ema.py), the same for every method.
    ``dataset_options`` adds the training targets a method's own losses need (``ChunkDataset`` keywords,
    e.g. our keyframe goals); they add keys to a batch and leave its frames and order unchanged."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    data = ChunkDataset(store, recipe.chunk_size, uint8_images=True, **(dataset_options or {}))
    loader = make_loader(
        data, ChunkBatchSampler(len(data), batch_size, seed), pin_memory=device.type == "cuda"
    )
    model = recipe.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = recipe.grad_clip if recipe.grad_clip > 0 else math.inf
    ema = WeightEMA(model, ema_decay) if ema_decay > 0 else None
    losses: list[float] = []
    start = time.perf_counter()
    timed_from = start
    bar = tqdm(total=steps, desc=f"train {recipe.name}", dynamic_ncols=True, disable=not progress)
    batches = iter(loader)
    for step in range(steps):
        batch = _to_device(next(batches), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = model(batch)
        recipe.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        recipe.optimizer.step()
        if recipe.scheduler is not None:
            recipe.scheduler.step()
        if ema is not None:
            ema.update()
        value = loss.item()  # also a sync point, so the step's time is all spent when it is read
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{recipe.name}: loss is {value} at step {step + 1}; lower its learning "
                f"rate (--set {recipe.name}...) or raise its warm-up"
            )
        losses.append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if step == 0:
            synchronize(device)
            timed_from = time.perf_counter()
    bar.close()
    synchronize(device)
    end = time.perf_counter()
    recipe.optimizer.zero_grad(set_to_none=True)  # the gradients' memory is not needed for evaluation
    if ema is not None:  # what gets evaluated is the average, as a training run's checkpoint ships it
        model.load_state_dict(ema.shadow, strict=False)
    timed_steps = steps - 1 if steps > 1 else 1
    elapsed = (end - timed_from) if steps > 1 else (end - start)
    tail = losses[-20:]
    return FitResult(steps, sum(tail) / len(tail), timed_steps * batch_size / max(elapsed, 1e-9), end - start,
                     batch_size)
