"""Draw the success of compared policies, with Wilson 95% intervals, from bench_policies.py --json reports.

    python scripts/plot_policies.py outputs/bench/vla_act.json outputs/bench/diffusion.json \
        --out docs/figures/policies_pick_place.png --title "PickPlace, 2-core CPU"

Reports of one comparison run in pieces are joined; per task, every row must share the step budget and batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla.baselines.figure import load_results, plot_success


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", type=Path, help="bench_policies.py --json files")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--title", default="", help="figure title, e.g. the machine")
    a = p.parse_args(argv)
    try:
        rows = load_results(a.reports)
    except (OSError, ValueError) as exc:
        p.error(str(exc))
    out = plot_success(rows, a.out, a.title)
    for r in rows:
        print(f"{r['task']:12s} {r['label']:40s} {100 * r['success_rate']:5.1f}% "
              f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] ({r['successes']}/{r['episodes']})")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
