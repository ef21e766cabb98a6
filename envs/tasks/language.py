"""Colours, instruction templates and the held-out split of colour combinations.

Instructions are sampled from several phrasings per task so a policy learns the meaning, not one
sentence. The held-out split reserves some (object colour, target colour) combinations that never
appear in training demos, to measure compositional generalisation.
"""

from __future__ import annotations

import numpy as np

# Saturated, well-separated hues: a 96x96 camera must tell them apart under simple lighting.
COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.10, 1.0),
    "green": (0.15, 0.70, 0.20, 1.0),
    "blue": (0.12, 0.30, 0.90, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "purple": (0.55, 0.20, 0.75, 1.0),
    "orange": (0.98, 0.50, 0.05, 1.0),
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "pick_cube": (
        "pick up the {obj} cube",
        "lift the {obj} cube",
        "grab the {obj} cube and lift it",
        "raise the {obj} block",
    ),
    "pick_place": (
        "put the {obj} cube on the {target} pad",
        "place the {obj} cube onto the {target} pad",
        "move the {obj} block to the {target} target",
        "pick up the {obj} cube and put it on the {target} pad",
    ),
    "stack": (
        "stack the {obj} cube on the {target} one",
        "put the {obj} cube on top of the {target} cube",
        "place the {obj} block on the {target} block",
    ),
}

SPLITS = ("train", "heldout", "all")


def heldout_pairs() -> frozenset[tuple[str, str]]:
    """(object colour, target colour) pairs reserved for evaluation: one per object colour.

    A fixed rotation (each colour paired with the colour two places further) keeps every colour
    seen in training both as object and as target, so only the *combination* is new.
    """
    names = list(COLOURS)
    return frozenset((names[i], names[(i + 2) % len(names)]) for i in range(len(names)))


def check_colours(colours: list[str] | tuple[str, ...], field: str) -> None:
    unknown = [c for c in colours if c not in COLOURS]
    if unknown:
        raise ValueError(f"{field}: unknown colour(s) {unknown}; choose from {sorted(COLOURS)}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")


def sample_pair(
    rng: np.random.Generator, colours: list[str], split: str, distinct: bool
) -> tuple[str, str]:
    """Sample an (object, target) colour pair allowed by ``split``."""
    check_split(split)
    held = heldout_pairs()
    pairs = [(a, b) for a in colours for b in colours if not (distinct and a == b)]
    if split == "train":
        pairs = [p for p in pairs if p not in held]
    elif split == "heldout":
        pairs = [p for p in pairs if p in held]
    if not pairs:
        raise ValueError(f"no colour pair of split={split!r} among colours {colours}")
    return pairs[int(rng.integers(len(pairs)))]


def instruction(task: str, rng: np.random.Generator, obj: str, target: str | None = None) -> str:
    templates = TEMPLATES[task]
    return templates[int(rng.integers(len(templates)))].format(obj=obj, target=target)
