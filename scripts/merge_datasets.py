"""Merge local LeRobotDatasets recorded with the same env config (e.g. on several machines) into one.

    python scripts/merge_datasets.py --out data/pick_place_all --repo-id local/demo_pick_place \
        data/pick_place_a data/pick_place_b
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla.data.merge import merge_datasets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="+", type=Path, help="dataset roots, merged in this order")
    p.add_argument("--out", type=Path, required=True, help="new dataset root (must not exist)")
    p.add_argument("--repo-id", default="local/merged", help="repo id of the merged dataset")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        episodes = merge_datasets(a.sources, a.out, a.repo_id)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        p.error(str(exc))
    print(f"{a.out}: {episodes} episodes from {len(a.sources)} datasets")
    return episodes


if __name__ == "__main__":
    main()
