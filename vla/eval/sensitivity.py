"""Does the policy look at the scene? The spread of its plans across scenes against the demos' spread.

Every episode starts from the same home pose, so at reset the proprioceptive state is identical and only
the cameras and the instruction tell one scene from another. Where the demos go depends on the scene (the
named cube's place and yaw), so the action they take ``k`` steps into an episode spreads across episodes.
A policy that reads the scene plans, at reset, an action ``k`` steps ahead that spreads about as much; one
that has only learned the demos' shared motion plans nearly the same action for every scene. The ratio of
the two spreads per action dimension measures that, before any closed-loop effect.

For a policy trained with the keyframe-goal loss (vla/heads/goal.py), ``keyframe_goal_error`` asks the
same question of its goal head: at each demo's first frame, how far its predicted grasp and release poses
are from the recorded ones, beside the error of a scene-blind guess (the median over the demos).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from envs.config import EnvConfig, make_env
from vla.data.dataset import ChunkDataset, FrameStore
from vla.eval.rollout import PolicySource, build_policy, obs_to_batch
from vla.policy import VLAPolicy
from vla.types import GOAL_KEY, STATE_KEY


def planned_spread(
    policy: PolicySource, env_cfg: EnvConfig, seeds: Sequence[int], step: int | None = None, device: str = "cpu"
) -> np.ndarray:
    """Standard deviation across the scenes of ``seeds`` of the action planned ``step`` steps ahead at reset.

    ``step`` defaults to the chunk's last action. Returns one value per action dimension.
    """
    if len(seeds) < 2:
        raise ValueError(f"need at least 2 scenes to measure a spread, got {len(seeds)}")
    env = make_env(env_cfg)
    try:
        model = build_policy(policy, env, device)
        planned = []
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            model.reset()
            with torch.no_grad():
                chunk = torch.as_tensor(model.predict_chunk(obs_to_batch(obs, device)))[0].float().cpu().numpy()
            k = chunk.shape[0] - 1 if step is None else step
            if not 0 <= k < chunk.shape[0]:
                raise ValueError(f"step={step} is outside the policy's chunk of {chunk.shape[0]} actions")
            planned.append(chunk[k])
    finally:
        env.close()
    return np.std(np.stack(planned), axis=0)


def demo_spread(store: FrameStore, step: int) -> np.ndarray:
    """Standard deviation across the demo episodes of the action recorded ``step`` frames after the start.

    Episodes shorter than ``step + 1`` frames contribute their last action (they have stopped by then).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    first = store.episode_starts
    if first.numel() < 2:
        raise ValueError(f"need at least 2 demo episodes to measure a spread, got {first.numel()}")
    frames = torch.minimum(first + step, store.episode_end[first] - 1)
    return store.action[frames].double().std(dim=0, unbiased=False).numpy()


@torch.no_grad()
def keyframe_goal_error(policy: VLAPolicy, store: FrameStore, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute error, in normalised state units, of the goal head at each episode's first frame.

    Returns (policy error, scene-blind error), each (2, state_dim) for (grasp, release); a keyframe an
    episode lacks is left out, and a keyframe no episode has is NaN. The scene-blind guess is the median
    keyframe state over the episodes, the best constant under this error.
    """
    if policy.goal_head is None:
        raise ValueError("the policy has no keyframe-goal head; it was trained with head.goal_loss_weight=0")
    data = ChunkDataset(store, policy.cfg.head.chunk_size, keyframe_goals=True)
    first = store.episode_starts  # store frame indices; the dataset covers every frame in store order
    policy.eval()
    preds, targets, pads = [], [], []
    for chunk in first.split(batch_size):
        batch = data.__getitems__(chunk.tolist())
        batch = {k: v.to(policy.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        preds.append(policy.goal_head(policy.encode(batch)).cpu())
        targets.append(policy.normalizer.normalize(STATE_KEY, batch[GOAL_KEY]).cpu())
        pads.append(batch["goal_is_pad"].cpu())
    pred, target, valid = torch.cat(preds), torch.cat(targets), ~torch.cat(pads)
    errors, blind = [], []
    for k in range(target.shape[1]):
        rows = valid[:, k]
        if not rows.any():
            nan = torch.full((target.shape[-1],), float("nan"))
            errors.append(nan)
            blind.append(nan)
            continue
        t = target[rows, k]
        errors.append((pred[rows, k] - t).abs().mean(0))
        blind.append((t - t.median(0).values).abs().mean(0))
    return torch.stack(errors).double().numpy(), torch.stack(blind).double().numpy()
