"""Rollouts: the observation -> batch conversion, parallel evaluation, the training loop's cheap hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from standins import broken_factory, expert_factory

from envs.config import EnvConfig, make_env
from vla.eval.rollout import episode_goal, evaluate_policy, make_train_eval_fn, obs_to_batch


def test_obs_to_batch_layout():
    env = make_env(EnvConfig(task="pick_cube", image_size=32))
    obs, _ = env.reset(seed=0)
    env.close()
    batch = obs_to_batch(obs, "cpu")
    for cam in ("front", "wrist"):
        img = batch[f"observation.images.{cam}"]
        assert img.shape == (1, 3, 32, 32) and img.dtype == torch.float32
        assert img.min() >= 0.0 and img.max() <= 1.0
        raw = obs[f"observation.images.{cam}"]
        assert img[0, :, 5, 7].tolist() == pytest.approx((raw[5, 7] / 255.0).tolist())
    assert batch["observation.state"].shape == (1, 7) and batch["observation.state"].dtype == torch.float32
    assert batch["task"] == [obs["task"]]
    with pytest.raises(ValueError, match="uint8"):
        obs_to_batch({**obs, "observation.images.front": obs["observation.images.front"].astype(np.float32)})


def test_episode_goal_names_object_and_target():
    class Task:
        target_kind = "pad"

    class Env:
        task = Task()

    assert episode_goal({"object": "blue", "target": "red"}, Env()) == "blue cube -> red pad"
    assert episode_goal({"object": "blue", "target": None}, Env()) == "blue cube"
    assert episode_goal({"is_success": False}, Env()) == ""


def test_parallel_evaluation_of_the_expert_succeeds_everywhere():
    cfg = EnvConfig(task="pick_cube", cameras=[])
    result = evaluate_policy(expert_factory, cfg, episodes=4, workers=2, video_episodes=1, progress=False)
    assert [e.seed for e in result.episodes] == [100_000, 100_001, 100_002, 100_003]
    m = result.metrics
    assert m["success_rate"] == 1.0 and m["interventions_per_episode"] == 0 and m["autonomy"] == 1.0
    assert m["success_ci95"][0] > 0.5 and not m["safety_clamps"]
    assert m["outcomes"] == {"success": 4}
    # Each episode records the instruction its env gave and the cube it names (pick_cube has no target).
    assert all(e.instruction.strip() and e.goal.endswith(" cube") and e.goal.split()[0] in e.instruction
               for e in result.episodes)
    assert sum(r["episodes"] for r in m["success_by_goal"].values()) == 4
    (video,) = result.videos
    assert video.seed == 100_000 and video.success
    assert len(video.frames) == result.episodes[0].steps + 1 and video.frames[0].dtype == np.uint8
    assert {o["actor"] for o in video.overlays[1:]} == {"policy"}


def test_seeded_runs_repeat():
    cfg = EnvConfig(task="pick_cube", cameras=[])
    a = evaluate_policy(expert_factory, cfg, episodes=2, seed_start=7, progress=False)
    b = evaluate_policy(expert_factory, cfg, episodes=2, seed_start=7, progress=False)
    assert [e.steps for e in a.episodes] == [e.steps for e in b.episodes]


class HoldModule(torch.nn.Module):
    """A torch policy that proposes to stay where the robot is (reads the batch like a real policy)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def predict_chunk(self, batch, **kw):
        state = batch["observation.state"] * self.scale
        return state[:, None, :].repeat(1, 3, 1)


def test_training_hook_runs_in_process():
    policy = HoldModule()
    eval_fn = make_train_eval_fn(EnvConfig(task="pick_cube", cameras=["front"], image_size=16, max_steps=5),
                                 episodes=2)
    figures = eval_fn(policy, 100)
    assert figures["success_rate"] == 0.0 and figures["mean_steps"] == 5 and policy.resets == 2
    assert set(figures) == {"success_rate", "success_ci_low", "success_ci_high", "mean_steps"}


def test_bad_arguments_are_refused():
    cfg = EnvConfig(task="pick_cube", cameras=[])
    with pytest.raises(ValueError, match="workers=1"):
        evaluate_policy(expert_factory, cfg, episodes=2, workers=2, gate_cfg={"operator": {"kind": "terminal"}})
    with pytest.raises(ValueError, match="episodes >= 1"):
        evaluate_policy(expert_factory, cfg, episodes=0)
    with pytest.raises(TypeError, match="checkpoint path"):
        evaluate_policy(42, cfg, episodes=1, progress=False)  # type: ignore[arg-type]


def test_a_policy_that_fails_to_load_in_the_workers_raises_instead_of_hanging():
    cfg = EnvConfig(task="pick_cube", cameras=[])
    with pytest.raises(ValueError, match="cannot drive the env"):
        evaluate_policy(broken_factory, cfg, episodes=2, workers=2, progress=False)
