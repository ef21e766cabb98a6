"""Checkpoints: exact reload, atomic writes, refusal of mismatched features / stats / architectures."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from train_helpers import make_policy

from vla.data import ChunkDataset
from vla.train import checkpoint as ckpt
from vla.train.checkpoint import IncompatibleCheckpointError, check_compatible, load_policy, save_checkpoint


def _save(policy, run_dir, step, **kw):
    stats = {k: {n: getattr(policy.normalizer, f"{'state' if 'state' in k else 'action'}_{n}") for n in
                 ("mean", "std", "min", "max")} for k in ("observation.state", "action")}
    return save_checkpoint(run_dir, step, policy, config_yaml="seed: 0\n", stats=stats,
                           train_state={"step": step}, **kw)


def test_reload_gives_identical_outputs(store, tmp_path):
    policy = make_policy(store).eval()
    path = _save(policy, tmp_path, 3)
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["model.safetensors", "config.yaml", "policy.json", "stats.json", "train_state.pt"])
    assert (tmp_path / "checkpoints" / "last").resolve() == path
    meta = json.loads((path / "policy.json").read_text())
    assert meta["spec"]["action_names"] == list(store.spec.action_names) and meta["vocab"] == policy.vocab
    loaded = load_policy(tmp_path, spec=store.spec)  # a run folder means its last checkpoint
    assert not loaded.training
    sd, sd2 = policy.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    batch = ChunkDataset(store, 4).__getitems__([0, 5, 20, 30])
    assert torch.equal(policy.predict_chunk(batch), loaded.predict_chunk(batch))
    assert ckpt.load_train_state(path)["step"] == 3


def test_crash_mid_write_keeps_the_previous_checkpoint(store, tmp_path, monkeypatch):
    policy = make_policy(store)
    first = _save(policy, tmp_path, 1)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)  # the last file written
    with pytest.raises(OSError, match="disk full"):
        _save(policy, tmp_path, 2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["00000001", "last"]  # no partial folder left behind
    assert ckpt.last_checkpoint(tmp_path) == first
    reloaded = load_policy(root / "last")
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in before.items())


def test_keep_last_prunes_old_checkpoints(store, tmp_path):
    policy = make_policy(store)
    for step in (1, 2, 3):
        _save(policy, tmp_path, step, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["00000002", "00000003"]
    _save(policy, tmp_path, 3, keep_last=2)  # the same step again replaces it in place
    assert ckpt.last_checkpoint(tmp_path).name == "00000003"


def test_mismatched_features_are_refused_with_every_difference(store, tmp_path):
    _save(make_policy(store), tmp_path, 1)
    other = replace(store.spec, state_dim=7, cameras=("front", "side"), state_names=())
    with pytest.raises(IncompatibleCheckpointError) as err:
        load_policy(tmp_path, spec=other)
    msg = str(err.value)
    assert "state_dim: checkpoint 4 vs 7" in msg and "cameras ['wrist']" in msg
    renamed = replace(store.spec, action_names=("j1", "j0", "gripper"))
    with pytest.raises(IncompatibleCheckpointError, match=r"action_names: checkpoint \['j0', 'j1'"):
        check_compatible(store.spec, renamed)
    check_compatible(store.spec, replace(store.spec, cameras=("wrist", "front", "extra")))  # superset is fine


def test_mismatched_stats_and_weights_are_refused(store, tmp_path):
    path = _save(make_policy(store), tmp_path / "a", 1)
    stats = json.loads((path / "stats.json").read_text())
    stats["action"]["std"] = stats["action"]["std"][:2]
    (path / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(IncompatibleCheckpointError, match=r"stats\['action'\]\['std'\] is 2 entries"):
        load_policy(path)
    path = _save(make_policy(store), tmp_path / "b", 1)
    wider = make_policy(store, d_model=64)
    with pytest.raises(IncompatibleCheckpointError, match=r"shape mismatch backbone\..*\(32.*vs model.*64"):
        ckpt.load_weights(wider, path)
    deeper = make_policy(store, n_layers=2)
    with pytest.raises(IncompatibleCheckpointError, match=r"missing in checkpoint: backbone\..*1\."):
        ckpt.load_weights(deeper, path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_policy(tmp_path / "nothing")
