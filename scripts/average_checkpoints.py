"""Average the weights of several checkpoints of one run into a new checkpoint folder.

    python scripts/average_checkpoints.py outputs/run/checkpoints/000{12,14,16,18}000 --out outputs/run/avg_12k_18k
    python scripts/average_checkpoints.py outputs/run --last 4 --out outputs/run/avg_last4

The result loads wherever a checkpoint does (``scripts/eval.py checkpoint=<out>``). Pick the span on
validation episodes (``seed_start`` away from the evaluation seeds), not on the seeds you report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla.train.average import average_checkpoints
from vla.train.checkpoint import list_checkpoints


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", type=Path, help="checkpoint folders, or one run folder with --last")
    p.add_argument("--last", type=int, default=0, help="with one run folder: average its last N checkpoints")
    p.add_argument("--out", type=Path, required=True, help="new checkpoint folder (must not exist)")
    a = p.parse_args(argv)
    if a.last:
        if a.last < 2:
            p.error(f"--last must be >= 2 (an average of one checkpoint is that checkpoint), got {a.last}")
        if len(a.paths) != 1:
            p.error("--last takes exactly one run folder")
        found = list_checkpoints(a.paths[0])
        if len(found) < a.last:
            p.error(f"--last {a.last}: {str(a.paths[0])!r} holds {len(found)} checkpoint(s)")
        a.paths = found[-a.last:]
    return a


def main(argv: list[str] | None = None) -> Path:
    a = parse_args(argv)
    out = average_checkpoints(a.paths, a.out)
    print(f"averaged {len(a.paths)} checkpoints -> {out}")
    for p in a.paths:
        print(f"  {p}")
    return out


if __name__ == "__main__":
    main()
