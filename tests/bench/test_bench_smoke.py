"""Smoke tests of the benchmark scripts at toy scale (a few steps, no timing asserts), and of the pieces
whose correctness the figures rest on: the no-cache flow loop computes the same chunk as the cached one,
the LeRobot adapter returns actions in our units, overrides are checked."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from bench_helpers import stats_with_image_stats

from envs.config import EnvConfig
from vla.baselines.compare import ensure_demos
from vla.baselines.lerobot_adapter import LeRobotPolicyAdapter
from vla.baselines.methods import parse_overrides
from vla.baselines.speed import make_scene, policy_config, recomputed_flow_chunk
from vla.benchmarks import DOC
from vla.eval.rollout import obs_to_batch
from vla.policy import VLAPolicy

ROOT = Path(__file__).resolve().parents[2]
# Small LeRobot models: the smoke test checks the plumbing, not the figures.
SMALL_BASELINES = [
    "act.dim_model=32",
    "act.dim_feedforward=64",
    "act.n_encoder_layers=1",
    "act.n_vae_encoder_layers=1",
    "act.n_heads=2",
    "diffusion.down_dims=[16,32]",
    "diffusion.diffusion_step_embed_dim=16",
    "diffusion.num_inference_steps=2",
]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "pick_cube"
    ensure_demos("pick_cube", root, episodes=1, image_size=32, workers=1)
    return root


def doc_text() -> str | None:
    return DOC.read_text() if DOC.exists() else None


def run_policies(root: Path, methods: list[str], out: Path, extra: tuple[str, ...] = (),
                 overrides: tuple[str, ...] = ()) -> dict:
    before = doc_text()
    load_script("bench_policies").main(
        [
            "--tasks",
            "pick_cube",
            "--methods",
            *methods,
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--episodes",
            "1",
            "--workers",
            "1",
            "--latency-reps",
            "1",
            "--max-episode-steps",
            "4",
            "--data-root",
            f"pick_cube={root}",
            *extra,
            "--set",
            *SMALL_BASELINES,
            *overrides,
            "--json",
            str(out),
            "--no-write",
            "--quiet",
        ]
    )
    assert doc_text() == before, "--no-write must leave docs/BENCHMARKS.md alone"
    return json.loads(out.read_text())


def test_bench_policies_act_and_vla(demo_root: Path, tmp_path: Path) -> None:
    data = run_policies(demo_root, ["act", "vla_l1", "vla_flow"], tmp_path / "out.json")
    rows = {r["method"]: r for r in data["results"]}
    assert set(rows) == {"act", "vla_l1", "vla_flow"}
    assert not rows["act"]["uses_language"] and rows["vla_l1"]["uses_language"]
    # The base learning rates each recipe starts from (LeRobot's ACT preset, our TrainConfig default).
    assert rows["act"]["recipe"].startswith("AdamW lr 1e-05") and "constant" in rows["act"]["recipe"]
    assert rows["vla_l1"]["recipe"].startswith("AdamW lr 0.0003")
    for r in rows.values():
        assert r["episodes"] == 1 and r["fit"]["steps"] == 2 and r["fit"]["samples_per_s"] > 0
        assert 0.0 <= r["ci_low"] <= r["success_rate"] <= r["ci_high"] <= 1.0
        assert r["latency"]["median_ms"] > 0 and r["params"] > 0


def test_bench_policies_diffusion(demo_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("diffusers", reason="LeRobot's Diffusion Policy needs lerobot[diffusion]")
    data = run_policies(demo_root, ["diffusion"], tmp_path / "out.json")
    (row,) = data["results"]
    assert row["method"] == "diffusion" and not row["uses_language"] and row["fit"]["samples_per_s"] > 0


def test_bench_speed_prints_every_section() -> None:
    before = doc_text()
    sections = load_script("bench_speed").main(
        [
            "--threads",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "2",
            "--train-steps",
            "2",
            "--rounds",
            "1",
            "--train-warmup",
            "1",
            "--latency-reps",
            "2",
            "--latency-warmup",
            "1",
            "--n-samples",
            "2",
            "--control-steps",
            "3",
            "--no-write",
        ]
    )
    assert doc_text() == before
    tables = {title: rows for title, _, rows, _ in sections}
    train = tables["Training throughput against a transformers reference"]
    assert [r[0] for r in train] == [
        "ours tiny (l1 head)",
        "ours tiny (flow head)",
        "transformers reference tiny (l1 head)",
    ]
    assert train[-1][-1] == "1.00x"
    floor = tables["Training step floor: dense FLOPs against the GEMM ceiling"]
    assert [r[0] for r in floor] == ["ours tiny (l1 head)", "transformers reference tiny (l1 head)"]
    # Same widths, depths and token counts: about the same work (ours adds its conv stem), whoever implements it.
    ours, ref = float(floor[0][1]), float(floor[1][1])
    assert ref > 0 and ref <= ours < 1.5 * ref
    variants = [r[1] for r in tables["Chunk inference latency (batch 1)"]]
    assert any("no cache" in v for v in variants) and any("prefix cached" in v for v in variants)
    assert not any(r[2].startswith("failed") for r in tables["Chunk inference latency (batch 1)"])
    assert len(tables["Sustained control-loop rate"]) == 2


def test_recomputed_flow_chunk_equals_cached_chunk() -> None:
    scene = make_scene(EnvConfig(task="pick_place", image_size=32), n_frames=1)
    policy = VLAPolicy(policy_config("tiny", "flow"), scene.spec, scene.vocab, scene.stats).eval()
    batch = obs_to_batch(scene.frames[0])
    cached = policy.predict_chunk(batch, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        recomputed = recomputed_flow_chunk(policy, batch, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(recomputed, cached)


def test_act_adapter_unnormalises_into_our_action_units() -> None:
    scene = make_scene(EnvConfig(task="pick_cube", image_size=32), n_frames=1)
    spec = scene.spec
    stats = stats_with_image_stats(scene)
    stats["action"]["mean"][-1], stats["action"]["std"][-1] = 0.7, 1.0
    adapter = LeRobotPolicyAdapter(
        "act",
        spec,
        stats,
        chunk_size=6,
        n_action_steps=3,
        overrides={
            "dim_model": 32,
            "dim_feedforward": 64,
            "n_encoder_layers": 1,
            "n_vae_encoder_layers": 1,
            "n_heads": 2,
        },
    ).eval()
    # A zero output layer predicts 0 in ACT's normalised (mean/std) space: our units are then the stats' mean.
    torch.nn.init.zeros_(adapter.inner.model.action_head.weight)
    torch.nn.init.zeros_(adapter.inner.model.action_head.bias)
    chunk = adapter.predict_chunk(obs_to_batch(scene.frames[0]))
    assert chunk.shape == (1, 6, spec.action_dim)
    torch.testing.assert_close(chunk[0], stats["action"]["mean"].expand(6, -1))
    adapter.reset()
    first = adapter.select_action(obs_to_batch(scene.frames[0]))
    assert first.shape == (1, spec.action_dim) and len(adapter._queue) == 2
    with pytest.raises(ValueError, match="n_samples=2"):
        adapter.predict_chunk(obs_to_batch(scene.frames[0]), n_samples=2)


def test_diffusion_adapter_acts_within_the_action_range_it_was_given() -> None:
    pytest.importorskip("diffusers", reason="LeRobot's Diffusion Policy needs lerobot[diffusion]")
    scene = make_scene(EnvConfig(task="pick_cube", image_size=32), n_frames=1)
    spec = scene.spec
    stats = stats_with_image_stats(scene)
    adapter = LeRobotPolicyAdapter(
        "diffusion",
        spec,
        stats,
        chunk_size=6,
        n_action_steps=3,
        overrides={"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "num_inference_steps": 2},
    ).eval()
    assert adapter.chunk_size == 8  # the chunk rounded up to the U-Net's down-sampling factor of 4
    chunk = adapter.predict_chunk(obs_to_batch(scene.frames[0]))
    # Samples are clipped to [-1, 1] in min/max space: in our units they lie within the stats' range.
    low, high = stats["action"]["min"], stats["action"]["max"]
    assert chunk.shape == (1, 3, spec.action_dim)
    assert bool(((chunk[0] >= low - 1e-5) & (chunk[0] <= high + 1e-5)).all())


def test_bad_overrides_name_the_fix() -> None:
    assert parse_overrides(["act.dim_model=64", "vla.train.lr=1e-3"]) == {
        "act": {"dim_model": 64},
        "vla": {"train.lr": 1e-3},
    }
    with pytest.raises(ValueError, match=r"METHOD\.FIELD=VALUE"):
        parse_overrides(["dim_model=64"])
    with pytest.raises(ValueError, match="unknown method 'pi0'"):
        parse_overrides(["pi0.lr=1"])
    scene = make_scene(EnvConfig(task="pick_cube", image_size=32), n_frames=1)
    with pytest.raises(ValueError, match="unknown act config field"):
        LeRobotPolicyAdapter("act", scene.spec, scene.stats, 6, 3, overrides={"dim_modle": 64})


def test_bench_policies_refuses_an_ema_decay_out_of_range(capsys) -> None:
    with pytest.raises(SystemExit):
        load_script("bench_policies").parse_args(["--ema-decay", "1.0"])
    assert "--ema-decay must be in [0, 1)" in capsys.readouterr().err
    assert load_script("bench_policies").parse_args(["--ema-decay", "0.999"]).ema_decay == 0.999


def test_compiled_training_rows_time_twins_of_ours_and_the_reference(monkeypatch) -> None:
    import functools

    from torch._dynamo.testing import CompileCounter

    from vla.baselines import speed
    from vla.train.compile import compile_regions

    # The eager backend keeps the test fast: what is checked is which models are timed, not the compiler.
    counter = CompileCounter()
    monkeypatch.setattr(speed, "compile_regions", functools.partial(compile_regions, backend=counter))
    torch._dynamo.reset()
    scene = make_scene(EnvConfig(task="pick_cube", image_size=32), n_frames=2)
    rows = speed.training_throughput(scene, "tiny", 2, steps=1, warmup=1, rounds=1, device=torch.device("cpu"),
                                     bf16=False, compiled=True)
    torch._dynamo.reset()
    params = {r.model: r.params for r in rows}
    for name in ("ours tiny (l1 head)", "transformers reference tiny (l1 head)"):
        assert params[f"{name}, regional torch.compile"] == params[name]
    assert len(rows) == 5 and counter.frame_count > 0




def test_compared_vla_trains_with_its_keyframe_losses(demo_root: Path, tmp_path: Path) -> None:
    # The PickPlace recipe's grounding and keyframe-goal losses need their targets in every batch; without
    # them the policy refuses to train, so this run fails unless the comparison builds them.
    recipe = ("vla_l1.model.grounding_slots=2", "vla_l1.model.grounding_loss_weight=1.0",
              "vla_l1.head.goal_loss_weight=1.0")
    plain = run_policies(demo_root, ["vla_l1"], tmp_path / "plain.json")["results"][0]
    (row,) = run_policies(demo_root, ["vla_l1"], tmp_path / "out.json", overrides=recipe)["results"]
    assert row["fit"]["steps"] == 2 and row["params"] > plain["params"]  # the slots and the goal head exist
    assert torch.isfinite(torch.tensor(row["fit"]["final_loss"]))


def test_concurrent_comparison_keeps_method_order(demo_root: Path, tmp_path: Path) -> None:
    data = run_policies(demo_root, ["vla_l1", "act"], tmp_path / "out.json", extra=("--jobs", "2"))
    assert [r["method"] for r in data["results"]] == ["vla_l1", "act"]
    for r in data["results"]:
        assert r["episodes"] == 1 and r["fit"]["steps"] == 2 and r["latency"]["median_ms"] > 0


def test_concurrent_comparison_names_the_method_that_failed(tmp_path: Path) -> None:
    from vla.baselines.compare import CompareSettings, compare_concurrently

    settings = CompareSettings(steps=1, batch_size=1, episodes=1, progress=False)
    with pytest.raises(RuntimeError, match="pick_cube / vla_l1 failed in its process"):
        compare_concurrently("pick_cube", tmp_path / "no_demos", ["vla_l1"], torch.device("cpu"), settings, jobs=1)


def test_missing_demos_are_recorded_with_their_options_by_several_writers(tmp_path: Path) -> None:
    from vla.baselines.compare import demo_config
    from vla.data.recorder import existing_episodes

    cfg = demo_config("pick_cube", tmp_path / "d", 3, 16, 1, 2, ["noise.std=0.01", "noise.prob=0.3", "seed=7"])
    assert (cfg.noise.std, cfg.noise.prob, cfg.seed, cfg.writers, cfg.env.image_size) == (0.01, 0.3, 7, 2, 16)
    with pytest.raises(ValueError, match="Key 'probability' not in 'MissConfig'"):
        demo_config("pick_cube", tmp_path / "d", 3, 16, 1, 1, ["miss.probability=0.4"])
    # Read as scripts/collect.py reads them: "false" is False, not a truthy string.
    assert demo_config("pick_cube", tmp_path / "d", 3, 16, 1, 1, ["use_videos=false"]).use_videos is False
    with pytest.raises(ValueError, match="could not be converted to Float"):
        demo_config("pick_cube", tmp_path / "d", 3, 16, 1, 1, ["miss.prob=often"])
    ensure_demos("pick_cube", tmp_path / "d", episodes=3, image_size=16, workers=1, writers=2,
                 options=["noise.std=0.01", "noise.prob=0.3"])
    assert existing_episodes(tmp_path / "d") == 3 and not (tmp_path / "d.shards").exists()


def test_bench_policies_keeps_demo_seeds_clear_of_evaluation_seeds(capsys) -> None:
    with pytest.raises(SystemExit):
        load_script("bench_policies").parse_args(["--demo-options", "seed=99990", "--demos", "100"])
    assert "would run into the evaluation seeds from 100000" in capsys.readouterr().err
    assert load_script("bench_policies").parse_args(["--demo-options", "seed=1000"]).demo_options == ["seed=1000"]


def test_bench_policies_refuses_zero_jobs(capsys) -> None:
    with pytest.raises(SystemExit):
        load_script("bench_policies").parse_args(["--jobs", "0"])
    assert "--jobs must be >= 1" in capsys.readouterr().err


def test_fit_with_ema_leaves_the_average_of_the_iterates(demo_root: Path) -> None:
    from torch import nn

    from vla.baselines.fit import fit
    from vla.baselines.methods import Recipe
    from vla.data import load_frames

    store = load_frames(demo_root)

    class StateToChunk(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(store.spec.state_dim, 2 * store.spec.action_dim)

        def forward(self, batch):
            pred = self.linear(batch["observation.state"]).view(-1, 2, store.spec.action_dim)
            return ((pred - batch["action"]) ** 2).mean(), {}

    def run(ema_decay: float) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
        torch.manual_seed(0)
        model = StateToChunk()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        iterates = [{k: v.clone() for k, v in model.state_dict().items()}]
        step = opt.step

        def recorded_step(*args, **kwargs):
            out = step(*args, **kwargs)
            iterates.append({k: v.clone() for k, v in model.state_dict().items()})
            return out

        opt.step = recorded_step
        recipe = Recipe("vla_l1", model, opt, None, 0.0, 2, False, "constant")
        fit(recipe, store, 3, 2, 0, torch.device("cpu"), progress=False, ema_decay=ema_decay)
        return model, iterates

    raw, iterates = run(0.0)
    averaged, same_iterates = run(0.5)
    for a, b in zip(iterates, same_iterates, strict=True):  # same data, same init: the same trajectory
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(raw.state_dict()[k], iterates[-1][k]) for k in iterates[-1])
    # WeightEMA's warm-up: decay min(0.5, (1 + n) / (10 + n)) at update n = 0, 1, 2.
    expected = {k: v.clone() for k, v in iterates[0].items()}
    for n, weights in enumerate(iterates[1:]):
        decay = min(0.5, (1 + n) / (10 + n))
        for k in expected:
            expected[k] = decay * expected[k] + (1 - decay) * weights[k]
    for k, v in averaged.state_dict().items():
        torch.testing.assert_close(v, expected[k])
        assert not torch.equal(v, iterates[-1][k])


@pytest.mark.parametrize("amp", [False, True])
def test_fit_trains_under_bf16_autocast_on_cpu_only_when_asked(demo_root: Path, amp: bool) -> None:
    from torch import nn

    from vla.baselines.fit import fit
    from vla.baselines.methods import Recipe
    from vla.data import load_frames

    store = load_frames(demo_root)
    seen: list[torch.dtype] = []

    class StateToChunk(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(store.spec.state_dim, 2 * store.spec.action_dim)

        def forward(self, batch):
            out = self.linear(batch["observation.state"])
            seen.append(out.dtype)  # a linear layer under autocast computes in bf16
            pred = out.float().view(-1, 2, store.spec.action_dim)
            return ((pred - batch["action"]) ** 2).mean(), {}

    model = StateToChunk()
    recipe = Recipe("vla_l1", model, torch.optim.SGD(model.parameters(), lr=0.1), None, 0.0, 2, False, "constant")
    fit(recipe, store, 2, 2, 0, torch.device("cpu"), amp=amp, progress=False)
    assert seen == [torch.bfloat16 if amp else torch.float32] * 2
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32


def test_bench_policies_precision_follows_the_device(monkeypatch) -> None:
    script = load_script("bench_policies")
    captured = {}

    def stop(task, root, methods, device, settings, overrides):
        captured[device.type] = settings.amp
        return []

    monkeypatch.setattr(script, "ensure_demos", lambda *a, **k: None)
    monkeypatch.setattr(script, "compare_on_task", stop)
    base = ["--tasks", "pick_cube", "--methods", "act", "--no-write", "--quiet"]
    script.main([*base, "--device", "cpu"])
    assert captured == {"cpu": False}  # auto: fp32 on CPU
    script.main([*base, "--device", "cpu", "--precision", "bf16"])
    assert captured == {"cpu": True}
    script.main([*base, "--device", "cpu", "--precision", "fp32"])
    assert captured == {"cpu": False}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
