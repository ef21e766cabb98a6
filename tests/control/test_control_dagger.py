"""DAgger data: demos + operator frames, weighted, chunks cut at the hand-back; a fine-tune through the
training loop from a checkpoint on recorded interventions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vla.config import TrainConfig
from vla.data import FrameStore, compute_stats, load_frames
from vla.data.recorder import DatasetRecorder, dataset_features
from vla.model_config import BackboneConfig, HeadConfig, PolicyConfig
from vla.policy import VLAPolicy
from vla.supervision.dagger import (
    FinetuneAppConfig,
    concat_stores,
    dagger_dataset,
    finetune,
    load_interventions,
    merge_interventions,
    takeover_segment_ends,
)
from vla.supervision.intervention_recorder import InterventionRecorder
from vla.tokenizer import build_vocab
from vla.train.checkpoint import load_policy, read_metadata, save_checkpoint
from vla.types import FeatureSpec

SPEC = FeatureSpec(cameras=("front",), image_shape=(3, 8, 8), state_dim=2, action_dim=2, gripper_dims=(1,),
                   state_names=("j0", "gripper"), action_names=("j0.target", "gripper"))


def store(lengths: list[int], base: float, tasks: list[str]) -> FrameStore:
    n = sum(lengths)
    ep = torch.cat([torch.full((k,), i) for i, k in enumerate(lengths)])
    action = torch.stack([base + torch.arange(n, dtype=torch.float32), torch.zeros(n)], dim=1)
    return FrameStore(spec=SPEC, images={"observation.images.front": torch.zeros(n, 3, 8, 8, dtype=torch.uint8)},
                      state=action.clone(), action=action, episode_index=ep,
                      task_index=torch.tensor([i % len(tasks) for i in ep.tolist()]), tasks=tasks)


def test_takeover_segment_ends():
    flags = torch.tensor([0, 0, 1, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    ends = torch.tensor([7] * 7 + [9] * 2)  # two episodes: frames 0..6 and 7..8
    assert takeover_segment_ends(flags, ends).tolist() == [2, 2, 5, 5, 5, 7, 7, 9, 9]


def test_concat_renumbers_episodes_and_merges_tasks():
    a, b = store([3, 2], 0.0, ["pick"]), store([4], 100.0, ["place", "pick"])
    both, offset = concat_stores(a, b)
    assert offset == 5 and both.episode_ids == [0, 1, 2]
    assert both.tasks == ["pick", "place"]
    assert both.task_index[offset:].tolist() == [1, 1, 1, 1]  # b's task 0 ("place") is 1 in the merged list


def test_dagger_dataset_weights_operator_frames_and_pads_past_the_handback():
    demos = store([6, 6], 0.0, ["pick"])
    inter = store([8], 100.0, ["pick"])
    flags = {0: np.array([0, 0, 1, 1, 1, 0, 0, 0], dtype=bool)}
    data = dagger_dataset(demos, inter, flags, chunk_size=4, intervention_weight=2.0)
    assert (data.demo_frames, data.operator_frames, data.episodes) == (12, 3, 1)
    assert len(data.dataset) == 12 + 2 * 3  # policy frames of the recorded episode are left out
    batch = data.dataset.__getitems__(list(range(len(data.dataset))))
    op = batch["action"][12:15, 0, 0].tolist()
    assert op == [102.0, 103.0, 104.0]  # the operator's frames, in order
    pads = batch["action_is_pad"][12:15].tolist()
    assert pads == [[False, False, False, True], [False, False, True, True], [False, True, True, True]]
    assert batch["action_is_pad"][:12].sum() == 2 * (1 + 2 + 3)  # demo chunks pad only past their episode end
    np.testing.assert_array_equal(batch["action"][12:15], batch["action"][15:18])  # drawn twice
    half = dagger_dataset(demos, inter, flags, 4, intervention_weight=1.5)
    assert len(half.dataset) == 12 + 3 + 2  # 1.5 x 3 operator frames, the half drawn at random
    with_own = dagger_dataset(demos, inter, flags, 4, 1.0, policy_frames=True)
    assert len(with_own.dataset) == 12 + 3 + 5


def test_dagger_dataset_carries_the_demos_keyframe_goals():
    demos = store([6], 0.0, ["pick"])
    demos.action[:, 1] = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])  # grasp at frame 2, release at 4
    inter = store([4], 100.0, ["pick"])
    flags = {0: np.array([0, 1, 1, 0], dtype=bool)}
    data = dagger_dataset(demos, inter, flags, 2, 1.0, keyframe_goals=True)
    batch = data.dataset.__getitems__(list(range(len(data.dataset))))
    assert batch["goal_state"][:6, :, 0].tolist() == [[2.0, 4.0]] * 6  # store() sets state j0 = frame index
    assert not batch["goal_is_pad"][:6].any()
    assert batch["goal_is_pad"][6:].all()  # the operator's frames carry no goal
    before = dagger_dataset(demos, inter, flags, 2, 1.0, keyframe_goals=True, goal_frames="before")
    pads = before.dataset.__getitems__(list(range(6)))["goal_is_pad"].tolist()
    assert pads == [[False, False]] * 2 + [[True, False]] * 2 + [[True, True]] * 2
    assert "goal_state" not in dagger_dataset(demos, inter, flags, 2, 1.0).dataset.__getitems__([0])


def test_merge_interventions_keeps_each_rounds_flags_with_its_frames():
    first = store([3, 2], 100.0, ["pick"])
    second = store([4], 200.0, ["place"])
    flags_1 = {0: np.array([0, 1, 1], bool), 1: np.array([1, 0], bool)}
    flags_2 = {0: np.array([0, 0, 1, 1], bool)}
    merged, flags = merge_interventions([(first, flags_1), (second, flags_2)])
    assert merged.episode_ids == [0, 1, 2] and sorted(flags) == [0, 1, 2]
    np.testing.assert_array_equal(flags[2], flags_2[0])  # the second round's episode follows the first's
    data = dagger_dataset(store([6], 0.0, ["pick"]), merged, flags, chunk_size=2, intervention_weight=1.0)
    assert (data.operator_frames, data.episodes) == (2 + 1 + 2, 3)
    batch = data.dataset.__getitems__(list(range(6, len(data.dataset))))
    assert sorted(batch["action"][:, 0, 0].tolist()) == [101.0, 102.0, 103.0, 202.0, 203.0]


def test_aggregated_rounds_must_be_recorded_datasets(tmp_path):
    with pytest.raises(FileNotFoundError, match="previous_interventions"):
        load_interventions([str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="own dataset"):
        FinetuneAppConfig(checkpoint="c", demos="d", interventions="r2", previous_interventions=["r1", "r2"])


def test_dagger_dataset_checks_flags_against_frames():
    with pytest.raises(ValueError, match="intervention flags"):
        dagger_dataset(store([4], 0.0, ["a"]), store([3], 0.0, ["a"]), {0: np.zeros(5, bool)}, 2, 1.0)


def _write(root, n_episodes: int, length: int, interventions: bool):
    rng = np.random.default_rng(int(interventions))
    scale = 2.0 if interventions else 1.0  # the operator moves differently from the demos
    names = dict(state_names=["j0", "gripper"], action_names=["j0.target", "gripper"])
    frames = [[{"observation.images.front": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                "observation.state": np.array([f / length, 0.0], np.float32),
                "action": np.array([scale * (f + 1) / length, float(f > length // 2)], np.float32)}
               for f in range(length)] for _ in range(n_episodes)]
    if interventions:
        with InterventionRecorder(root, "local/interventions", 10, ["front"], 8, robot_type="arm6", **names) as rec:
            for ep in frames:
                rec.begin_episode("pick up the cube")
                for k, f in enumerate(ep):
                    rec.add_frame(f, f["action"], intervention=2 <= k < 6)
                rec.end_episode()
    else:
        features = dataset_features(["front"], 8, names["state_names"], names["action_names"])
        with DatasetRecorder(root, "local/demos", 10, features, "arm6") as rec:
            for ep in frames:
                rec.add_episode(ep, "pick up the cube")


@pytest.mark.parametrize("goal_loss_weight", [0.0, 1.0])
def test_finetune_from_a_checkpoint_on_demos_and_interventions(tmp_path, goal_loss_weight):
    _write(tmp_path / "demos", 3, 10, interventions=False)
    _write(tmp_path / "inter", 2, 10, interventions=True)
    demos = load_frames(tmp_path / "demos")
    cfg = PolicyConfig(backbone=BackboneConfig(d_model=16, n_layers=1, n_heads=2, stem_channels=[4], patch_size=2,
                                               patch_stride=2, d_vision=16, vision_layers=1, vision_heads=2),
                       head=HeadConfig(chunk_size=3, n_action_steps=2, n_layers=1, n_heads=2,
                                       goal_loss_weight=goal_loss_weight))
    torch.manual_seed(0)
    stats = compute_stats(demos.state, demos.action, demos.spec)
    policy = VLAPolicy(cfg, demos.spec, build_vocab(demos.tasks), stats)
    ckpt = save_checkpoint(tmp_path / "base", 0, policy, config_yaml="{}", stats=stats)
    app = FinetuneAppConfig(checkpoint=str(ckpt), demos=str(tmp_path / "demos"), interventions=str(tmp_path / "inter"),
                            train=TrainConfig(steps=2, batch_size=4, warmup_steps=1, log_every=1, save_every=2,
                                              amp=False),
                            device="cpu", intervention_weight=3.0)
    out, data = finetune(app, tmp_path / "run", "{}")
    assert data.operator_frames == 2 * 4 and data.demo_frames == 30
    tuned = load_policy(out, "cpu", spec=demos.spec)
    before = load_policy(ckpt, "cpu")
    moved = [not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), before.state_dict().values(),
                                                    strict=True)]
    assert any(moved)  # trained from the checkpoint
    # The checkpoint's normalisation stats are kept (the intervention data alone would give others).
    _, kept = read_metadata(out)
    _, original = read_metadata(ckpt)
    for key in original:
        for name in original[key]:
            torch.testing.assert_close(kept[key][name], original[key][name])
    torch.testing.assert_close(tuned.normalizer.state_dict(), before.normalizer.state_dict())


def _tiny_checkpoint(path, demos: FrameStore):
    """A random-init tiny policy saved as a checkpoint for these demos (a fine-tune's starting point)."""
    cfg = PolicyConfig(backbone=BackboneConfig(d_model=16, n_layers=1, n_heads=2, stem_channels=[4], patch_size=2,
                                               patch_stride=2, d_vision=16, vision_layers=1, vision_heads=2),
                       head=HeadConfig(chunk_size=3, n_action_steps=2, n_layers=1, n_heads=2))
    stats = compute_stats(demos.state, demos.action, demos.spec)
    return save_checkpoint(path, 0, VLAPolicy(cfg, demos.spec, build_vocab(demos.tasks), stats), config_yaml="{}",
                           stats=stats)


def test_finetune_aggregates_earlier_rounds(tmp_path):
    _write(tmp_path / "demos", 2, 10, interventions=False)
    _write(tmp_path / "round1", 2, 10, interventions=True)
    _write(tmp_path / "round2", 1, 10, interventions=True)
    demos = load_frames(tmp_path / "demos")
    ckpt = _tiny_checkpoint(tmp_path / "base", demos)
    app = FinetuneAppConfig(checkpoint=str(ckpt), demos=str(tmp_path / "demos"), interventions=str(tmp_path / "round2"),
                            previous_interventions=[str(tmp_path / "round1")],
                            train=TrainConfig(steps=1, batch_size=4, warmup_steps=1, log_every=1, save_every=1,
                                              amp=False), device="cpu", intervention_weight=1.0)
    _, data = finetune(app, tmp_path / "run", "{}")
    assert (data.operator_frames, data.episodes, data.demo_frames) == (3 * 4, 3, 20)  # 4 operator frames/episode


def test_a_round_without_takeovers_still_trains_on_earlier_rounds(tmp_path):
    _write(tmp_path / "demos", 2, 10, interventions=False)
    _write(tmp_path / "round1", 1, 10, interventions=True)
    demos = load_frames(tmp_path / "demos")
    ckpt = _tiny_checkpoint(tmp_path / "base", demos)
    train = TrainConfig(steps=1, batch_size=4, warmup_steps=1, log_every=1, save_every=1, amp=False)
    app = FinetuneAppConfig(checkpoint=str(ckpt), demos=str(tmp_path / "demos"), interventions=str(tmp_path / "none"),
                            previous_interventions=[str(tmp_path / "round1")], train=train, device="cpu")
    _, data = finetune(app, tmp_path / "run", "{}")
    assert (data.operator_frames, data.episodes) == (4, 1)
    app.previous_interventions = []
    with pytest.raises(ValueError, match="no takeover"):
        finetune(app, tmp_path / "run2", "{}")


def test_collect_episodes_zero_needs_earlier_rounds():
    with pytest.raises(ValueError, match="previous_interventions"):
        FinetuneAppConfig(checkpoint="c", demos="d", interventions="i", collect_episodes=0)
    with pytest.raises(ValueError, match="collect_episodes must be >= 0"):
        FinetuneAppConfig(checkpoint="c", demos="d", interventions="i", collect_episodes=-1)


def test_a_round_without_collection_fine_tunes_on_earlier_rounds_only(tmp_path, monkeypatch):
    import vla.eval.rollout as rollout
    import vla.supervision.dagger as dagger

    _write(tmp_path / "demos", 2, 10, interventions=False)
    _write(tmp_path / "round1", 1, 10, interventions=True)
    ckpt = _tiny_checkpoint(tmp_path / "base", load_frames(tmp_path / "demos"))
    evaluated: list[str] = []

    metrics = {"interventions_per_episode": 0.5, "takeovers": 1, "aborts": 0, "episodes": 2, "success_rate": 1.0,
               "success_ci95": [0.3, 1.0],
               "success_without_intervention": 0.5, "autonomy": 0.9}

    def fake_evaluate(checkpoint, *args, **kwargs):
        evaluated.append(str(checkpoint))
        return SimpleNamespace(metrics=metrics)

    def no_collection(*args, **kwargs):
        raise AssertionError("collect_episodes=0 must not run the control loop")

    monkeypatch.setattr(rollout, "evaluate_policy", fake_evaluate)
    monkeypatch.setattr(dagger, "run_control", no_collection)
    train = TrainConfig(steps=1, batch_size=4, warmup_steps=1, log_every=1, save_every=1, amp=False)
    app = FinetuneAppConfig(checkpoint=str(ckpt), demos=str(tmp_path / "demos"), interventions=str(tmp_path / "none"),
                            previous_interventions=[str(tmp_path / "round1")], collect_episodes=0, train=train,
                            device="cpu")
    result = dagger.run_dagger(app, tmp_path / "run", "{}")
    assert result.collect == [] and result.data is not None and result.data.operator_frames == 4
    assert evaluated == [str(ckpt), str(result.checkpoint)]
    rows = dagger.dagger_rows(result)
    assert rows[1][1] == "none: earlier rounds' takeovers"
    assert rows[-1][0] == "change" and rows[-1][3].startswith("+0% [")  # 1 intervention in 2 episodes, both runs
