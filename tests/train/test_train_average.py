"""Checkpoint averaging: the mean of the weights, loadable as a checkpoint; mismatches and overwrites refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import make_policy

import vla.train.average as average_module
from vla.data import ChunkDataset
from vla.train.average import average_checkpoints, average_state_dicts
from vla.train.checkpoint import IncompatibleCheckpointError, load_policy, save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import average_checkpoints as average_script


def _stats(policy):
    return {k: {n: getattr(policy.normalizer, f"{'state' if 'state' in k else 'action'}_{n}") for n in
                ("mean", "std", "min", "max")} for k in ("observation.state", "action")}


def _save_perturbed(policy, run_dir, step, scale):
    """Checkpoint ``step`` of ``policy`` with every parameter shifted by ``scale`` times a fixed noise."""
    gen = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return save_checkpoint(run_dir, step, policy, config_yaml="seed: 0\n", stats=_stats(policy),
                           train_state={"step": step})


def test_average_is_the_mean_of_the_weights_and_loads_as_a_policy(store, tmp_path):
    policy = make_policy(store).eval()
    paths = [_save_perturbed(policy, tmp_path, step, 0.1) for step in (1, 2, 3)]
    out = average_checkpoints(paths, tmp_path / "avg")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors", "policy.json", "stats.json"]
    weights = [load_file(str(p / "model.safetensors")) for p in paths]
    averaged = load_file(str(out / "model.safetensors"))
    for key, value in averaged.items():
        expected = sum(w[key].double() for w in weights) / 3
        torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6)
    # The three checkpoints differ, so the mean is none of them.
    some_param = next(k for k, v in averaged.items() if v.is_floating_point() and v.numel() > 10)
    assert all(not torch.equal(averaged[some_param], w[some_param]) for w in weights)
    loaded = load_policy(out, spec=store.spec)
    batch = ChunkDataset(store, 4).__getitems__([0, 5, 20])
    assert torch.isfinite(loaded.predict_chunk(batch)).all()


def test_average_of_identical_checkpoints_predicts_the_same(store, tmp_path):
    policy = make_policy(store).eval()
    a = _save_perturbed(policy, tmp_path / "a", 1, 0.0)
    b = _save_perturbed(policy, tmp_path / "b", 1, 0.0)
    out = average_checkpoints([a, b], tmp_path / "avg")
    batch = ChunkDataset(store, 4).__getitems__([0, 7])
    torch.testing.assert_close(load_policy(out).predict_chunk(batch), policy.predict_chunk(batch))


def test_checkpoints_of_different_models_are_refused(store, tmp_path):
    a = _save_perturbed(make_policy(store), tmp_path / "a", 1, 0.0)
    b = _save_perturbed(make_policy(store, d_model=48), tmp_path / "b", 1, 0.0)
    with pytest.raises(IncompatibleCheckpointError, match=r"policy\.json .* differs"):
        average_checkpoints([a, b], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_state_dict_mismatches_are_named():
    with pytest.raises(IncompatibleCheckpointError, match=r"'w'.*\(3,\)"):
        average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(IncompatibleCheckpointError, match="other tensors"):
        average_state_dicts([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])
    with pytest.raises(IncompatibleCheckpointError, match="non-floating tensor 'n'"):
        average_state_dicts([{"n": torch.tensor([1])}, {"n": torch.tensor([2])}])
    same = average_state_dicts([{"n": torch.tensor([4]), "w": torch.ones(2)}, {"n": torch.tensor([4]),
                                                                               "w": torch.zeros(2)}])
    assert torch.equal(same["n"], torch.tensor([4])) and torch.equal(same["w"], torch.full((2,), 0.5))


def test_existing_output_and_too_few_inputs_are_refused(store, tmp_path):
    policy = make_policy(store)
    paths = [_save_perturbed(policy, tmp_path, step, 0.1) for step in (1, 2)]
    keep = tmp_path / "kept"
    keep.mkdir()
    (keep / "note.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="choose a new folder"):
        average_checkpoints(paths, keep)
    assert (keep / "note.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="at least 2"):
        average_checkpoints(paths[:1], tmp_path / "avg")
    with pytest.raises(ValueError, match="listed twice"):
        average_checkpoints([paths[0], paths[0]], tmp_path / "avg")


def test_script_averages_the_last_n_checkpoints_of_a_run(store, tmp_path, capsys):
    policy = make_policy(store)
    for step in (1, 2, 3):
        _save_perturbed(policy, tmp_path / "run", step, 0.1)
    out = average_script.main([str(tmp_path / "run"), "--last", "2", "--out", str(tmp_path / "avg")])
    printed = capsys.readouterr().out
    assert "averaged 2 checkpoints" in printed and "00000002" in printed and "00000003" in printed
    assert "00000001" not in printed
    assert (out / "model.safetensors").is_file()
    for bad in ("5", "1", "-2"):
        with pytest.raises(SystemExit):
            average_script.main([str(tmp_path / "run"), "--last", bad, "--out", str(tmp_path / "avg2")])
    err = capsys.readouterr().err
    assert "holds 3 checkpoint(s)" in err and "--last must be >= 2" in err
    assert not (tmp_path / "avg2").exists()


def test_a_mismatch_names_the_checkpoint_folders(store, tmp_path, monkeypatch):
    policy = make_policy(store)
    paths = [_save_perturbed(policy, tmp_path, step, 0.1) for step in (1, 2)]

    real_load = average_module.load_file

    def load_with_a_reshaped_tensor(path):
        sd = real_load(path)
        if "00000002" in path:
            key = next(k for k, v in sd.items() if v.is_floating_point() and v.ndim == 2)
            sd[key] = sd[key][:1]
        return sd

    monkeypatch.setattr(average_module, "load_file", load_with_a_reshaped_tensor)
    with pytest.raises(IncompatibleCheckpointError, match=r"checkpoint 1: .*00000002"):
        average_checkpoints(paths, tmp_path / "avg")
