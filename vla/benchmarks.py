"""Benchmark bookkeeping: the machine a figure came from, and appending tables to docs/BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu)
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    import mujoco
    import torch

    return (
        f"Machine: {cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"mujoco {mujoco.__version__}; {dt.date.today().isoformat()}."
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def append_section(
    title: str, command: str, header: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "",
    doc: Path = DOC,
) -> None:
    """Append one measured table, with the command that produced it, to the benchmarks document."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    if not doc.exists():
        doc.write_text("# Benchmarks\n\nEvery figure below carries the command that produced it and the machine.\n")
    block = f"\n## {title}\n\nCommand: `{command}`\n\n{note}\n\n{markdown_table(header, rows)}\n"
    with doc.open("a") as f:
        f.write(block)
