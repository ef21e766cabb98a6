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
from multiprocessing.connection import Connection, wait
from typing import Any

# How long a finished job's process may take to exit after sending its result before it is terminated.
_EXIT_GRACE_S = 60.0


class JobFailed(RuntimeError):
    """A job raised, or its process died without reporting; ``detail`` holds its traceback or exit code."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


def _child(conn: Connection, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        # Pickled here, inside the try: a result that cannot be pickled comes back as an error, not as silence.
        message = (pickle.dumps(target(*args)), None)
    except BaseException:  # the parent raises it, with the job's name
        message = (None, traceback.format_exc())
    conn.send(message)
    conn.close()


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
    pending = list(range(len(jobs)))
    # One pipe per job: its reader turns ready when the job sends its result or when its process ends, and an
    # end with nothing sent (EOF) is a death, with no window in which a result could still be on its way.
    running: dict[Connection, tuple[int, Any]] = {}
    results: dict[int, Any] = {}
    try:
        while pending or running:
            while pending and len(running) < max_running:
                index = pending.pop(0)
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(writer, target, jobs[index]), daemon=False)
                proc.start()
                writer.close()  # the child holds the only writer now, so its exit shows as EOF here
                running[reader] = (index, proc)
            ready = wait(list(running), timeout=poll_s)
            if not ready and on_poll is not None:
                on_poll()
            for reader in ready:
                index, proc = running.pop(reader)
                try:
                    payload, error = reader.recv()
                except EOFError:
                    proc.join()
                    raise JobFailed(names[index], f"its process died with exit code {proc.exitcode} before "
                                                  "reporting (out of memory, or a crash in native code)") from None
                finally:
                    reader.close()
                proc.join(_EXIT_GRACE_S)
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
                if error is not None:
                    raise JobFailed(names[index], error)
                results[index] = pickle.loads(payload)
    finally:
        for reader, (_, proc) in running.items():
            proc.terminate()
            proc.join()
            reader.close()
    return [results[i] for i in range(len(jobs))]
