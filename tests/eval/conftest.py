"""The stand-in policies live beside the supervision tests; worker processes import them by this path too."""

import sys
from pathlib import Path

STANDINS = str(Path(__file__).resolve().parents[1] / "supervision")
if STANDINS not in sys.path:
    sys.path.insert(0, STANDINS)
