"""Helpers shared by the benchmark tests."""

from __future__ import annotations

import torch


def stats_with_image_stats(scene) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of the scene's state/action stats plus the per-camera image stats LeRobot's policies expect."""
    stats = {k: {n: v.clone() for n, v in group.items()} for k, group in scene.stats.items()}
    for key in scene.spec.image_keys():
        stats[key] = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25),
                      "min": torch.zeros(3, 1, 1), "max": torch.ones(3, 1, 1)}
    return stats
