"""Run independent jobs each in its own spawned process, fail fast, and notice a process that dies.

``multiprocessing.Pool`` replaces a worker that died and waits forever for its lost task; a process per job,
watched here, turns a death (out of memory, a crash in native code) into an error naming the job, and the
first failure terminates the jobs still running instead of letting them run on unseen.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import traceback
from collections.abc import Callable, Sequence
from queue import Empty
from typing import Any

# How long a finished job's process may take to exit after sending its result before it is terminated.
_EXIT_GRACE_S = 60.0


class JobFailed(RuntimeError):
    """A job raised, or its process died without reporting; ``detail`` holds its traceback or exit code."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


def _child(queue: Any, index: int, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        # Pickled here, inside the try: a result that cannot be pickled comes back as an error, not as silence.
        queue.put((index, pickle.dumps(target(*args)), None))
    except BaseException:  # the parent raises it, with the job's name
        queue.put((index, None, traceback.format_exc()))


def run_in_processes(
    target: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    names: Sequence[str],
    max_running: int,
    on_poll: Callable[[], None] | None = None,
    poll_s: float = 2.0,
) -> list[Any]:
    """``target(*args)`` for every ``args`` in ``jobs``, at most ``max_running`` processes at once; results in
    ``jobs`` order. ``target`` must be a module-level function (the processes are spawned); ``on_poll`` is
    called every ``poll_s`` seconds while jobs run (e.g. to refresh a progress bar). Raises ``JobFailed``."""
    if len(names) != len(jobs):
        raise ValueError(f"{len(jobs)} jobs but {len(names)} names")
    if max_running < 1:
        raise ValueError(f"max_running must be >= 1, got {max_running}")
    ctx = mp.get_context("spawn")  # CUDA and EGL contexts cannot be used in a forked child
    queue = ctx.Queue()
    pending = list(range(len(jobs)))
    running: dict[int, Any] = {}
    results: dict[int, Any] = {}

    def receive(timeout: float) -> bool:
        try:
            index, payload, error = queue.get(timeout=timeout)
        except Empty:
            return False
        proc = running.pop(index)
        proc.join(_EXIT_GRACE_S)
        if proc.is_alive():
            proc.terminate()
            proc.join()
        if error is not None:
            raise JobFailed(names[index], error)
        results[index] = pickle.loads(payload)
        return True

    try:
        while pending or running:
            while pending and len(running) < max_running:
                index = pending.pop(0)
                proc = ctx.Process(target=_child, args=(queue, index, target, jobs[index]), daemon=False)
                proc.start()
                running[index] = proc
            if receive(poll_s):
                continue
            if on_poll is not None:
                on_poll()
            for index, proc in list(running.items()):
                if proc.is_alive():
                    continue
                # It may have reported just after the wait above: read what is there before calling it dead.
                while receive(1.0):
                    pass
                if index in running:
                    raise JobFailed(names[index], f"its process died with exit code {proc.exitcode} before "
                                                  "reporting (out of memory, or a crash in native code)")
    finally:
        for proc in running.values():
            proc.terminate()
            proc.join()
    return [results[i] for i in range(len(jobs))]
