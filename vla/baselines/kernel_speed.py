"""Training-step time of a LeRobot policy on the CPU: stock, and with ``cpu_kernels.py``, in fp32 and bf16.

The claim behind ``cpu_kernels.py`` is speed with nothing else changed, so it is measured the way the
comparison trains: LeRobot's own optimiser preset and gradient clipping, the policy's real input sizes
(rendered camera frames and measured states from the env, random action chunks), one fixed batch. The
stock model and its swapped twin start from the same weights; the four variants are timed in
interleaved rounds so drifting background load is shared among them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vla.baselines.cpu_kernels import convs_as_matmuls, with_fused_step
from vla.baselines.lerobot_adapter import LeRobotPolicyAdapter, image_stats
from vla.baselines.speed import Scene, training_batch
from vla.baselines.timing import Timing, count_parameters, interleaved_timings
from vla.model_config import HeadConfig

CPU = torch.device("cpu")


@dataclass
class KernelRow:
    kernels: str  # "stock" or "cpu_kernels"
    precision: str  # "fp32" or "bf16 autocast"
    step: Timing
    batch_size: int
    params: int

    @property
    def samples_per_s(self) -> float:
        return self.batch_size / (self.step.median_ms / 1e3)


def _scene_stats(scene: Scene) -> dict[str, dict[str, torch.Tensor]]:
    """The scene's state/action stats plus per-camera image stats of its frames, as LeRobot's policies take."""
    images = {
        key: torch.stack([torch.as_tensor(f[key]).permute(2, 0, 1) for f in scene.frames])
        for key in scene.spec.image_keys()
    }
    return {**scene.stats, **image_stats(images)}


def _stepper(adapter: LeRobotPolicyAdapter, optimizer: torch.optim.Optimizer, clip: float,
             batch: dict[str, Any], bf16: bool) -> Callable[[], None]:
    params = [p for p in adapter.parameters() if p.requires_grad]

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = adapter(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()

    return step


def lerobot_step_times(
    scene: Scene,
    kind: str,
    batch_size: int,
    steps: int,
    warmup: int,
    rounds: int,
    overrides: dict[str, Any] | None = None,
) -> list[KernelRow]:
    """Median CPU training-step time of LeRobot's ``kind`` ("act" | "diffusion"): stock and swapped,
    each in fp32 and under bf16 autocast. ``steps`` timed steps per variant, split into ``rounds``."""
    head = HeadConfig()
    torch.manual_seed(0)
    stock = LeRobotPolicyAdapter(kind, scene.spec, _scene_stats(scene), head.chunk_size, head.n_action_steps,
                                 "cpu", overrides).train()
    swapped = copy.deepcopy(stock)
    convs_as_matmuls(swapped)
    opt_cfg = stock.config.get_optimizer_preset()
    clip = float(opt_cfg.grad_clip_norm) if opt_cfg.grad_clip_norm else math.inf
    optimizers = {
        "stock": (stock, opt_cfg.build(stock.inner.get_optim_params())),
        "cpu_kernels": (swapped, with_fused_step(opt_cfg.build(swapped.inner.get_optim_params()))),
    }
    batch = training_batch(scene, batch_size, stock.chunk_size, CPU)
    steppers = {
        (name, precision): _stepper(model, opt, clip, batch, bf16=precision != "fp32")
        for name, (model, opt) in optimizers.items()
        for precision in ("fp32", "bf16 autocast")
    }
    # No re-warm-up between rounds: a step of the stock 274 M-parameter policy takes seconds on a CPU.
    timings = interleaved_timings(steppers, steps, warmup, rounds, CPU, rewarm=0)
    params = count_parameters(stock)
    return [KernelRow(name, precision, timings[(name, precision)], batch_size, params) for name, precision in steppers]
