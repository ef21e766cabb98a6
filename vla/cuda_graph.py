"""Chunk inference replayed from a captured CUDA graph.

At batch 1 the tiny and small presets are launch-bound on a GPU: one ``predict_chunk`` is a few hundred
small kernels, and launching each costs the host more time than running it costs the device (on an H200,
eager bf16 was even slower than fp32; docs/BENCHMARKS.md). A CUDA graph records those kernels once and
replays them with a single launch.

A graph reads fixed input buffers and writes a fixed output buffer, so ``CudaGraphPolicy`` owns them: each
call copies the new observation (camera images, state, and the instruction, tokenized on the host and
padded to the backbone's longest) into the inputs, replays, and returns a copy of the output. What the graph
runs must stay on the device: no host sync, no host-to-device copy, no shape that depends on the data (the
l1 head's gripper threshold and the relative-action offsets are written that way for it). The flow head's
noise comes from the default CUDA generator, whose offset advances at every replay, so samples stay fresh.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from vla.backbones import TextTokens
from vla.policy import VLAPolicy
from vla.types import STATE_KEY, TASK_KEY

# (policy, batch) -> chunk; a batch's TASK_KEY holds TextTokens on the device while the graph is captured.
ChunkFn = Callable[[VLAPolicy, dict[str, Any]], torch.Tensor]


class CudaGraphPolicy:
    """``predict_chunk`` of one policy, captured once for a fixed batch size and replayed per call.

    ``example`` is one batch as ``policy.predict_chunk`` takes it (camera images, state, instructions); its
    batch size is the graph's. ``n_samples`` (flow head) is fixed too. ``bf16`` captures under bf16 autocast.
    ``chunk_fn`` replaces ``predict_chunk`` as what is captured (benchmarks time other variants with it).
    """

    def __init__(
        self,
        policy: VLAPolicy,
        example: Mapping[str, Any],
        *,
        n_samples: int = 1,
        bf16: bool = False,
        chunk_fn: ChunkFn | None = None,
        warmup: int = 3,
    ) -> None:
        device = policy.device
        if device.type != "cuda":
            raise ValueError(f"CUDA-graph inference needs the policy on a CUDA device, it is on {device}")
        if policy.training:
            raise ValueError("call policy.eval() before capturing: augmentation and dropout would be recorded")
        tokenize = getattr(policy.backbone, "tokenize", None)
        if tokenize is None:
            raise ValueError(
                f"{type(policy.backbone).__name__} takes instructions only as strings; CUDA-graph inference "
                "needs the from-scratch backbone (model=tiny or model=small)"
            )
        self.policy, self.bf16 = policy, bf16
        self._tokenize = tokenize
        self._text_len: int = policy.backbone.max_text_tokens
        tasks = _tasks(example)
        size = len(tasks)
        self._inputs = {
            key: torch.zeros((size, *policy.spec.image_shape), device=device) for key in policy.spec.image_keys()
        }
        self._inputs[STATE_KEY] = torch.zeros((size, policy.spec.state_dim), device=device)
        first = tokenize(tasks, self._text_len)
        self._tokens = TextTokens(first.ids.to(device), first.valid.to(device))
        self._tasks = tuple(tasks)
        self._copy_observation(example)

        run = chunk_fn or (lambda p, b: p.predict_chunk(b, n_samples=n_samples))
        static_batch = {**self._inputs, TASK_KEY: self._tokens}
        # Warm-up on a side stream, as torch.cuda.graphs asks: lazy initialisations (cuBLAS handles,
        # autotuning) happen here rather than inside the capture.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), self._context():
            for _ in range(warmup):
                run(policy, static_batch)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with self._context(), torch.cuda.graph(self.graph):
            self._output = run(policy, static_batch)

    @property
    def batch_size(self) -> int:
        return self._tokens.ids.shape[0]

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        # No autocast weight cache: a cached cast made during capture would be freed while the graph still
        # reads it.
        stack.enter_context(
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False)
        )
        return stack

    def _copy_observation(self, batch: Mapping[str, Any]) -> None:
        for key, buffer in self._inputs.items():
            if key not in batch:
                raise ValueError(f"batch lacks {key!r}; the graph was captured for {sorted(self._inputs)}")
            value = torch.as_tensor(batch[key])
            if tuple(value.shape) != tuple(buffer.shape):
                raise ValueError(
                    f"batch[{key!r}] has shape {tuple(value.shape)}, the graph was captured for "
                    f"{tuple(buffer.shape)}: a graph has fixed shapes, capture another CudaGraphPolicy"
                )
            buffer.copy_(value)
        tasks = tuple(_tasks(batch))
        if len(tasks) != self.batch_size:
            raise ValueError(f"batch[{TASK_KEY!r}] has {len(tasks)} instructions, the graph takes {self.batch_size}")
        if tasks != self._tasks:  # an instruction holds for an episode: re-tokenize only when it changes
            tokens = self._tokenize(list(tasks), self._text_len)
            self._tokens.ids.copy_(tokens.ids)
            self._tokens.valid.copy_(tokens.valid)
            self._tasks = tasks

    def predict_chunk(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """What ``policy.predict_chunk(batch, n_samples=...)`` returns, on the device, from one replay."""
        self._copy_observation(batch)
        self.graph.replay()
        return self._output.clone()


def _tasks(batch: Mapping[str, Any]) -> list[str]:
    tasks = batch.get(TASK_KEY)
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"batch[{TASK_KEY!r}] must be a list of instructions (one per sample), got {tasks!r}")
    return list(tasks)
