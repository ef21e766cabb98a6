"""Evaluation: seeded rollouts under the supervision gate, metrics (pure functions), reports."""

from vla.eval.metrics import EpisodeLog, Rate, auroc, summarize, wilson_interval
from vla.eval.rollout import (
    EpisodeVideo,
    EvalResult,
    evaluate_policy,
    make_train_eval_fn,
    obs_to_batch,
    run_episode,
)

__all__ = [
    "EpisodeLog",
    "EpisodeVideo",
    "EvalResult",
    "Rate",
    "auroc",
    "evaluate_policy",
    "make_train_eval_fn",
    "obs_to_batch",
    "run_episode",
    "summarize",
    "wilson_interval",
]
