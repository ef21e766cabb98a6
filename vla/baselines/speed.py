"""The measurements of ``scripts/bench_speed.py``: training throughput beside the transformers reference,
batch-1 chunk latency with and without the prefix cache, and the sustained control-loop rate.

Inputs are real env observations (rendered camera frames, measured state, sampled instructions) with
synthetic action chunks: throughput and latency do not depend on what the actions are, and the
benchmark then needs no recorded demos.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from envs.config import EnvConfig, make_env
from vla.baselines.floor import StepWork, step_work
from vla.baselines.reference_vlm import ReferenceVLA
from vla.baselines.timing import Timing, count_parameters, interleaved_timings, time_calls
from vla.cuda_graph import ChunkFn, CudaGraphPolicy
from vla.eval.rollout import env_feature_spec, obs_to_batch
from vla.model_config import HeadConfig, PolicyConfig, backbone_preset
from vla.policy import VLAPolicy
from vla.tokenizer import build_vocab
from vla.train.compile import compile_regions
from vla.types import ACTION_KEY, STATE_KEY, TASK_KEY, FeatureSpec

log = logging.getLogger(__name__)

Stats = dict[str, dict[str, torch.Tensor]]


@dataclass
class Scene:
    """What every measurement of one run shares: the env's feature spec, a vocabulary, stats and frames."""

    env_cfg: EnvConfig
    spec: FeatureSpec
    vocab: list[str]
    stats: Stats
    frames: list[dict[str, Any]]  # env observations from distinct seeds


def make_scene(env_cfg: EnvConfig, n_frames: int, seed: int = 0) -> Scene:
    env = make_env(env_cfg)
    try:
        spec = env_feature_spec(env)
        frames = [env.reset(seed=seed + i)[0] for i in range(n_frames)]
    finally:
        env.close()
    states = torch.stack([torch.as_tensor(f[STATE_KEY], dtype=torch.float32) for f in frames])
    # Centred on the observed poses so a random-init policy commands targets near where the arm is.
    stats: Stats = {}
    for key in (STATE_KEY, ACTION_KEY):
        mean = states.mean(0)
        std = torch.full_like(mean, 0.1)
        stats[key] = {"mean": mean, "std": std, "min": mean - 3 * std, "max": mean + 3 * std}
    return Scene(env_cfg, spec, build_vocab([str(f[TASK_KEY]) for f in frames]), stats, frames)


def training_batch(
    scene: Scene, batch_size: int, chunk_size: int, device: torch.device, seed: int = 0
) -> dict[str, Any]:
    """A fixed batch of ``batch_size`` frames (cycling the scene's observations) with random action chunks."""
    rows = [obs_to_batch(scene.frames[i % len(scene.frames)], device) for i in range(batch_size)]
    batch: dict[str, Any] = {k: torch.cat([r[k] for r in rows]) for k in rows[0] if k != TASK_KEY}
    batch[TASK_KEY] = [r[TASK_KEY][0] for r in rows]
    gen = torch.Generator().manual_seed(seed)
    stats = scene.stats[ACTION_KEY]
    actions = stats["mean"] + stats["std"] * torch.randn(
        batch_size, chunk_size, scene.spec.action_dim, generator=gen
    )
    for d in scene.spec.gripper_dims:
        actions[..., d] = (torch.rand(batch_size, chunk_size, generator=gen) > 0.5).float()
    batch[ACTION_KEY] = actions.to(device)
    batch["action_is_pad"] = torch.zeros(batch_size, chunk_size, dtype=torch.bool, device=device)
    return batch


def policy_config(preset: str, head: str) -> PolicyConfig:
    return PolicyConfig(backbone=backbone_preset(preset), head=HeadConfig(kind=head))


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


# --------------------------------------------------------------------------------------- training
@dataclass
class ThroughputRow:
    model: str
    params: int
    step: Timing
    batch_size: int

    @property
    def samples_per_s(self) -> float:
        return self.batch_size / (self.step.median_ms / 1e3)


def _train_step(model: torch.nn.Module, batch: dict[str, Any], bf16: bool) -> Callable[[], None]:
    device = next(model.parameters()).device
    # The same plain AdamW for every model: the comparison is of the models, not of optimiser settings.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    model.train()

    def step() -> None:
        with autocast(device, bf16):
            loss, _ = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _throughput_models(scene: Scene, preset: str, heads: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """Ours with each of ``heads``, then the transformers reference (l1 head), from one seed."""
    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {
        f"ours {preset} ({head} head)": VLAPolicy(policy_config(preset, head), scene.spec, scene.vocab, scene.stats)
        for head in heads
    }
    models[f"transformers reference {preset} (l1 head)"] = ReferenceVLA(
        policy_config(preset, "l1"), scene.spec, scene.vocab, scene.stats
    )
    return models


def training_step_work(
    scene: Scene, preset: str, batch_size: int, warmup: int = 3, steps: int = 3
) -> dict[str, StepWork]:
    """Dense FLOPs and GEMM time per CPU training step of ours (l1 head) and the reference."""
    device = torch.device("cpu")
    batch = training_batch(scene, batch_size, HeadConfig().chunk_size, device)
    out = {}
    for name, model in _throughput_models(scene, preset, ("l1",)).items():
        step = _train_step(model, batch, bf16=False)
        for _ in range(warmup):
            step()
        out[name] = step_work(step, steps)
    return out


def training_throughput(
    scene: Scene,
    preset: str,
    batch_size: int,
    steps: int,
    warmup: int,
    rounds: int,
    device: torch.device,
    bf16: bool,
    compiled: bool = False,
) -> list[ThroughputRow]:
    """Ours (l1 and flow heads) and the transformers reference, timed in interleaved rounds on one batch.

    Interleaved (``interleaved_timings``) so drifting background load is shared by all models.
    ``compiled`` adds ours (l1) and the reference again, each with its transformer layers and stem
    compiled in place (``train.compile``'s regional compilation); compilation happens in the untimed
    warm-up steps.
    """
    models = _throughput_models(scene, preset, ("l1", "flow"))
    if compiled:
        for name in (f"ours {preset} (l1 head)", f"transformers reference {preset} (l1 head)"):
            twin = copy.deepcopy(models[name])
            compile_regions(twin)
            models[f"{name}, regional torch.compile"] = twin
    chunk = HeadConfig().chunk_size
    batch = training_batch(scene, batch_size, chunk, device)
    steppers = {name: _train_step(m.to(device), batch, bf16) for name, m in models.items()}
    timings = interleaved_timings(steppers, steps, warmup, rounds, device)
    return [ThroughputRow(name, count_parameters(models[name]), timings[name], batch_size) for name in models]


# ---------------------------------------------------------------------------------------- latency
def recomputed_flow_chunk(
    policy: VLAPolicy, batch: dict[str, Any], generator: torch.Generator | None = None
) -> torch.Tensor:
    """The flow head's Euler integration with the backbone recomputed at every step (no prefix cache).

    Same arithmetic as ``FlowHead.sample`` for one sample, so with the same noise it returns the same
    chunk; only the backbone's repeated cost differs.
    """
    head = policy.head
    if not head.stochastic:
        raise ValueError("recomputed_flow_chunk needs a policy with the flow head (head.kind='flow')")
    steps = head.cfg.num_steps
    n = torch.as_tensor(batch[STATE_KEY]).shape[0]  # not len(batch['task']): it may be TextTokens
    gen_device = generator.device if generator is not None else policy.device
    x = torch.randn((n, head.chunk_size, head.action_dim), generator=generator, device=gen_device).to(
        policy.device
    )
    pi0 = head.cfg.flow_target == "noise_minus_action"
    for i in range(steps):
        prefix = policy.encode(batch)
        s = torch.full((n,), 1.0 - i / steps, device=policy.device)
        x = x - ((1.0 if pi0 else -1.0) / steps) * head.velocity(x, s if pi0 else 1.0 - s, prefix).float()
    x = torch.where(head.gripper, (x > 0).to(x.dtype), x)
    return policy.normalizer.unnormalize(ACTION_KEY, x)


@dataclass
class LatencyRow:
    model: str
    variant: str
    timing: Timing | None  # None: the variant failed (see ``error``)
    error: str = ""


def _variant_specs(policy: VLAPolicy, n_samples: int) -> dict[str, tuple[ChunkFn | None, int]]:
    """Latency variant name -> (what computes the chunk, samples); None: ``predict_chunk`` itself, which
    runs the backbone once and the head on that prefix."""
    if not policy.stochastic:
        return {"one pass (backbone + parallel decoding)": (None, 1)}
    steps = policy.cfg.head.num_steps
    specs: dict[str, tuple[ChunkFn | None, int]] = {
        f"prefix cached: backbone once, {steps} head steps": (None, 1),
        f"no cache: backbone recomputed at each of {steps} steps": (recomputed_flow_chunk, 1),
    }
    if n_samples > 1:
        specs[f"prefix cached, {n_samples} samples (risk score)"] = (None, n_samples)
    return specs


def _latency_variants(
    policy: VLAPolicy, batch: dict[str, Any], n_samples: int
) -> dict[str, Callable[[], torch.Tensor]]:
    def call(chunk_fn: ChunkFn | None, samples: int) -> Callable[[], torch.Tensor]:
        if chunk_fn is not None:
            return lambda: chunk_fn(policy, batch)
        return lambda: policy.predict_chunk(batch, n_samples=samples)

    return {name: call(*spec) for name, spec in _variant_specs(policy, n_samples).items()}


def inference_latency(
    scene: Scene,
    preset: str,
    device: torch.device,
    reps: int,
    warmup: int,
    n_samples: int,
    compile_cuda: bool = True,
) -> list[LatencyRow]:
    """Batch-1 ``predict_chunk`` latency (result copied to the host) for each head and variant.

    On CUDA each variant is also timed under bf16 autocast, then captured whole as one CUDA graph
    (``CudaGraphPolicy``) in fp32 and bf16, and last under bf16 with the policy's backbone and head compiled
    by ``torch.compile(mode="reduce-overhead")``, which replays CUDA graphs wherever the compiler can
    capture one (it falls back to compiled kernels elsewhere and says so in its log).
    """
    rows: list[LatencyRow] = []
    batch = obs_to_batch(scene.frames[0], device)
    precisions = [("fp32", False)] + ([("bf16", True)] if device.type == "cuda" else [])
    for head in ("l1", "flow"):
        torch.manual_seed(0)
        policy = (
            VLAPolicy(policy_config(preset, head), scene.spec, scene.vocab, scene.stats).to(device).eval()
        )
        name = f"ours {preset} ({head} head)"
        for label, bf16 in precisions:
            for variant, fn in _latency_variants(policy, batch, n_samples).items():
                rows.append(_timed(name, f"{variant}, {label}", fn, device, bf16, reps, warmup))
        if device.type == "cuda":
            # Before the compiled rows: a failing torch.compile capture can leave CUDA-graph state behind.
            for label, bf16 in precisions:
                rows += _graphed_rows(policy, name, batch, device, label, bf16, reps, warmup, n_samples)
        if device.type == "cuda" and compile_cuda:
            rows += _compiled_rows(policy, name, batch, device, reps, warmup, n_samples)
    return rows


def _timed(
    name: str,
    variant: str,
    fn: Callable[[], torch.Tensor],
    device: torch.device,
    bf16: bool,
    reps: int,
    warmup: int,
) -> LatencyRow:
    def call() -> None:
        with torch.inference_mode(), autocast(device, bf16):
            fn().cpu()

    try:
        return LatencyRow(name, variant, time_calls(call, reps, warmup, device))
    except Exception as exc:  # a failing variant (e.g. a compiler error) is reported, the others still run
        return _failed_row(name, variant, exc)


def _failed_row(name: str, variant: str, exc: Exception) -> LatencyRow:
    """The table row of a variant that raised; the full traceback goes to the log."""
    log.exception("latency of %s [%s] failed", name, variant)
    return LatencyRow(name, variant, None, f"{type(exc).__name__}: {exc}".splitlines()[0][:120])


def _graphed_rows(
    policy: VLAPolicy,
    name: str,
    batch: dict[str, Any],
    device: torch.device,
    label: str,
    bf16: bool,
    reps: int,
    warmup: int,
    n_samples: int,
) -> list[LatencyRow]:
    """Each latency variant captured once as a CUDA graph (vla/cuda_graph.py) and timed per replay, the
    observation copied into the graph's inputs and the chunk copied to the host at every call."""
    rows = []
    for variant, (chunk_fn, samples) in _variant_specs(policy, n_samples).items():
        full = f"{variant}, {label} + CUDA graph"
        try:
            graphed = CudaGraphPolicy(policy, batch, n_samples=samples, bf16=bf16, chunk_fn=chunk_fn)
            timing = time_calls(lambda g=graphed: g.predict_chunk(batch).cpu(), reps, warmup, device)
            rows.append(LatencyRow(name, full, timing))
        except Exception as exc:  # a failing capture is reported, the other variants still run
            rows.append(_failed_row(name, full, exc))
    return rows


def _compiled_rows(
    policy: VLAPolicy,
    name: str,
    batch: dict[str, Any],
    device: torch.device,
    reps: int,
    warmup: int,
    n_samples: int,
) -> list[LatencyRow]:
    """bf16 + torch.compile(mode="reduce-overhead") of the backbone and of the head's decoding step.

    The modules where the time goes are compiled rather than ``predict_chunk`` as a whole, whose per-call
    Python (argument checks, normaliser, queue) would only add graph breaks. The compiled callables are
    instance attributes that shadow the methods, removed again afterwards.
    """
    head = policy.head
    step_name = "velocity" if head.stochastic else "_decode"
    try:
        policy.backbone.forward = torch.compile(policy.backbone.forward, mode="reduce-overhead")
        setattr(head, step_name, torch.compile(getattr(head, step_name), mode="reduce-overhead"))
        # Compilation and CUDA-graph recording happen in the first calls: give them room.
        return [
            _timed(
                name,
                f"{variant}, bf16 + torch.compile(reduce-overhead)",
                _new_graph_step(fn),
                device,
                True,
                reps,
                max(warmup, 5),
            )
            for variant, fn in _latency_variants(policy, batch, n_samples).items()
        ]
    finally:
        for module, attr in ((policy.backbone, "forward"), (head, step_name)):
            if attr in vars(module):
                delattr(module, attr)


def _new_graph_step(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Tell the compiler's CUDA-graph trees that a new call begins, so the previous call's outputs (which
    the next backbone replay overwrites) are not read as live: without it the run fails on that."""

    def call() -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()
        return fn()

    return call


# ----------------------------------------------------------------------------------- control loop
@dataclass
class ControlRow:
    mode: str
    achieved_hz: float
    deadline_misses: int
    steps: int
    tick_p99_ms: float
    latency_median_ms: float


def control_loop_rate(
    scene: Scene, preset: str, device: torch.device, steps: int, threads: int, hz: float
) -> list[ControlRow]:
    """The supervised control loop (sim robot, auto gate) driven by a random-init l1 policy.

    ``realtime``: wall-clock ticks at ``hz`` with inference in a background thread: the achieved rate
    and the deadlines missed. ``lockstep``: no clock, each chunk computed when the gate needs it: the
    highest rate the loop sustains on this machine.
    """
    from vla.supervision.config import GateConfig
    from vla.supervision.control_app import ControlAppConfig, run_control
    from vla.supervision.control_loop import ControlConfig, summarize

    torch.manual_seed(0)
    policy = VLAPolicy(policy_config(preset, "l1"), scene.spec, scene.vocab, scene.stats).to(device).eval()
    modes = {
        f"realtime {hz:g} Hz, async inference": ControlConfig(hz=hz, max_steps=steps),
        "lockstep (no clock), blocking inference": ControlConfig(
            hz=hz, async_inference=False, realtime=False, max_steps=steps
        ),
    }
    rows = []
    for mode, control in modes.items():
        cfg = ControlAppConfig(
            checkpoint="in-memory",
            env=scene.env_cfg,
            gate=GateConfig(),
            control=control,
            episodes=1,
            device=str(device),
            torch_threads=threads,
        )
        s = summarize(run_control(cfg, policy=policy, progress=False))
        rows.append(
            ControlRow(
                mode,
                s["achieved_hz"],
                s["deadline_misses"],
                s["steps"],
                s["tick_work_p99_ms"],
                s["latency_median_ms"],
            )
        )
    return rows
