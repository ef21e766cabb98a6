"""The training loop: it learns, resumes bit-for-bit, isolates side jobs' randomness, and shards under DDP."""

from __future__ import annotations

import itertools
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from train_helpers import CHUNK, make_policy, train_config

from vla.data import ChunkDataset, compute_stats
from vla.train.loop import DistInfo, Trainer
from vla.train.optim import build_optimizer, warmup_cosine


def _trainer(store, run_dir, cfg, **kw) -> Trainer:
    policy = make_policy(store)
    stats = compute_stats(store.state, store.action, store.spec)
    return Trainer(policy, ChunkDataset(store, CHUNK), cfg, run_dir=run_dir, config_yaml="seed: 0\n", stats=stats,
                   seed=0, device=torch.device("cpu"), **kw)


def test_resume_after_a_crash_matches_an_uninterrupted_run(store, tmp_path):
    def noisy_eval(policy, step):  # draws random numbers: must not shift the training streams
        return {"success": float(torch.rand(()).item() > 2)}

    straight = _trainer(store, tmp_path / "a", train_config(eval_every=1), eval_fn=noisy_eval)
    result = straight.fit()
    assert result.steps == 4 and math.isfinite(result.final_loss) and result.metrics["eval/success"] == 0.0

    def crash(policy, step):
        raise RuntimeError("rollout worker died")

    interrupted = _trainer(store, tmp_path / "b", train_config(eval_every=2), eval_fn=crash)
    with pytest.raises(RuntimeError, match="rollout worker died"):
        interrupted.fit()  # checkpoint 2 is written before the rollouts of step 2
    resumed = _trainer(store, tmp_path / "b", train_config())
    resumed.resume()
    assert resumed.step == 2
    resumed.fit()
    a, b = straight.policy.state_dict(), resumed.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)
    assert straight.scheduler.get_last_lr() == resumed.scheduler.get_last_lr()


def test_weight_average_is_what_checkpoints_ship_and_resume_keeps_both(store, tmp_path):
    from vla.train.checkpoint import last_checkpoint, load_weights

    straight = _trainer(store, tmp_path / "a", train_config(ema_decay=0.5))
    raw_before = {k: v.clone() for k, v in straight.policy.state_dict().items()}
    straight.fit()
    raw = straight.policy.state_dict()
    # The average lags the raw weights, and the checkpoint holds the average, not the raw weights.
    key = next(k for k in straight.ema.shadow if not torch.equal(raw[k], raw_before[k]))
    assert not torch.equal(straight.ema.shadow[key], raw[key])
    shipped = make_policy(store)
    load_weights(shipped, last_checkpoint(tmp_path / "a"))
    assert all(torch.equal(shipped.state_dict()[k], straight.ema.shadow[k]) for k in straight.ema.shadow)

    def crash(policy, step):
        raise RuntimeError("killed")

    first_half = _trainer(store, tmp_path / "b", train_config(ema_decay=0.5, eval_every=2), eval_fn=crash)
    with pytest.raises(RuntimeError, match="killed"):
        first_half.fit()  # stops right after checkpoint 2
    resumed = _trainer(store, tmp_path / "b", train_config(ema_decay=0.5))
    resumed.resume()
    resumed.fit()
    b = resumed.policy.state_dict()
    assert all(torch.equal(raw[k], b[k]) for k in raw)
    assert all(torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]) for k in straight.ema.shadow)
    assert resumed.ema.updates == straight.ema.updates == 4


def test_resume_without_a_checkpoint_says_what_to_pass(store, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"hydra\.run\.dir="):
        _trainer(store, tmp_path, train_config()).resume()


def test_validation_runs_and_loss_goes_down(store, tmp_path):
    val = ChunkDataset(store, CHUNK, [3])
    trainer = _trainer(store, tmp_path, train_config(steps=12, lr=3e-3, save_every=100, val_every=12,
                                                     val_batches=2), val_data=val)
    first_loss, _ = trainer.policy(ChunkDataset(store, CHUNK).__getitems__(list(range(0, 40, 2))))
    result = trainer.fit()
    assert result.checkpoint is not None and result.checkpoint.name == "00000012"
    assert {"val/loss", "val/l1", "val/gripper_bce"} <= result.metrics.keys()
    assert result.final_loss < first_loss.item()


class _NaNPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return self.w * float("nan"), {}


def test_non_finite_loss_stops_with_advice(store, tmp_path):
    trainer = Trainer(_NaNPolicy(), ChunkDataset(store, CHUNK), train_config(), run_dir=tmp_path,
                      config_yaml="", stats={}, seed=0, device=torch.device("cpu"))
    with pytest.raises(FloatingPointError, match=r"step 1.*train\.lr"):
        trainer.fit()


def test_warmup_then_cosine_and_no_decay_on_vectors():
    lrs = [warmup_cosine(s, 10, 110, 0.1) for s in range(111)]
    assert lrs[0] < lrs[5] < lrs[9] < 1.0 and lrs[10] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:])) and lrs[110] == pytest.approx(0.1)
    opt = build_optimizer(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), lr=1e-3, weight_decay=0.1)
    decayed, plain = opt.param_groups
    assert [p.ndim for p in decayed["params"]] == [2] and decayed["weight_decay"] == 0.1
    assert all(p.ndim == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0


def _ddp_worker(rank: int, world: int, port: int, store, run_dir: str, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    trainer = _trainer(store, run_dir, train_config(steps=2, batch_size=4), dist_info=DistInfo(rank, world, 0))
    seen = []
    trainer.logger.log = lambda scalars, step: seen.append(step)  # only rank 0 logs
    trainer.fit()
    out[rank] = ({k: v.clone() for k, v in trainer.policy.state_dict().items()}, len(seen))
    torch.distributed.destroy_process_group()


def test_ddp_ranks_stay_in_sync(store, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    # fork: the children inherit the imported modules and the loaded frames instead of re-importing them
    mp.start_processes(_ddp_worker, args=(2, port, store, str(tmp_path), out), nprocs=2, start_method="fork")
    (sd0, logs0), (sd1, logs1) = out[0], out[1]
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert logs0 == 2 and logs1 == 0
    fresh = make_policy(store).state_dict()
    assert any(not torch.equal(sd0[k], fresh[k]) for k in sd0)  # they trained, and identically
    assert (tmp_path / "checkpoints" / "last").exists()
