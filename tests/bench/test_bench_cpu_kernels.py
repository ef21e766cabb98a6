"""The CPU kernels swapped into LeRobot's policies change speed only: same function, same gradients, same
weights under the same keys, and an optimiser that takes the same steps."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from bench_helpers import stats_with_image_stats
from torch import nn

from envs.config import EnvConfig
from vla.baselines.cpu_kernels import MatmulConv1d, convs_as_matmuls, supports, with_fused_step
from vla.baselines.lerobot_adapter import LeRobotPolicyAdapter
from vla.baselines.methods import build_recipe
from vla.baselines.speed import make_scene
from vla.eval.rollout import obs_to_batch
from vla.types import ACTION_KEY


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "kernel", "stride", "padding", "bias", "length"),
    [
        (8, 16, 5, 1, 2, True, 4),  # the U-Net's residual-block convolution
        (8, 8, 3, 2, 1, True, 8),  # its down-sampling convolution
        (6, 4, 1, 1, 0, False, 7),  # a 1x1 projection without bias
        (5, 3, 3, 1, 0, True, 9),  # no padding: the output is shorter
        (4, 4, 3, 2, 0, True, 8),  # the last window does not fit and is dropped
    ],
)
def test_matmul_conv_equals_the_convolution_forward_and_backward(in_ch, out_ch, kernel, stride, padding, bias,
                                                                 length) -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias).double()
    twin = MatmulConv1d(copy.deepcopy(conv))
    # A transposed view, as the U-Net's first input is: the unfold must not assume contiguity.
    x = torch.randn(3, length, in_ch, dtype=torch.float64).transpose(1, 2).requires_grad_()
    x_twin = x.detach().clone().requires_grad_()
    y, y_twin = conv(x), twin(x_twin)
    assert y_twin.shape == y.shape
    torch.testing.assert_close(y_twin, y)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    (y_twin * weights).sum().backward()
    torch.testing.assert_close(x_twin.grad, x.grad)
    torch.testing.assert_close(twin.weight.grad, conv.weight.grad)
    if bias:
        torch.testing.assert_close(twin.bias.grad, conv.bias.grad)


def test_only_convolutions_it_computes_exactly_are_replaced() -> None:
    model = nn.Sequential(
        nn.Conv1d(4, 4, 3, padding=1),
        nn.Sequential(nn.Conv1d(4, 4, 3, padding=2, dilation=2), nn.Mish(), nn.Conv1d(4, 4, 1)),
        nn.ConvTranspose1d(4, 4, 4, stride=2, padding=1),
        nn.Conv1d(4, 4, 3, groups=2, padding=1),
        nn.Conv1d(4, 4, 3, padding="same"),
        nn.Conv1d(4, 4, 3, padding=1, padding_mode="reflect"),
    )
    keys = list(model.state_dict())
    x = torch.randn(2, 4, 8)
    before = model(x)
    assert convs_as_matmuls(model) == 2
    assert isinstance(model[0], MatmulConv1d) and isinstance(model[1][2], MatmulConv1d)
    assert [type(m) for m in (model[1][0], model[2], model[3], model[4], model[5])] == [
        nn.Conv1d, nn.ConvTranspose1d, nn.Conv1d, nn.Conv1d, nn.Conv1d
    ]
    assert list(model.state_dict()) == keys  # checkpoints load into either form
    torch.testing.assert_close(model(x), before)
    assert convs_as_matmuls(model) == 0  # nothing left to replace
    with pytest.raises(ValueError, match="dilation"):
        MatmulConv1d(model[1][0])
    assert not supports(nn.Linear(2, 2))


@pytest.mark.filterwarnings("ignore:.*weight_norm.* is deprecated:FutureWarning")  # the old form is the risk
def test_convolutions_with_a_computed_weight_or_hooks_are_kept() -> None:
    normed = torch.nn.utils.weight_norm(nn.Conv1d(4, 4, 3, padding=1))  # weight recomputed by a pre-hook
    hooked = nn.Conv1d(4, 4, 3, padding=1)
    hooked.register_forward_hook(lambda module, args, out: out * 2)
    model = nn.Sequential(normed, hooked)
    assert convs_as_matmuls(model) == 0
    assert model[0] is normed and model[1] is hooked


def test_batch_of_one_under_bf16_autocast_is_bf16_like_the_convolution() -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(8, 16, 5, padding=2)
    twin = MatmulConv1d(copy.deepcopy(conv))
    x = torch.randn(1, 8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_twin = conv(x), twin(x)
    assert y_twin.dtype == y.dtype == torch.bfloat16
    torch.testing.assert_close(y_twin.float(), y.float(), rtol=2e-2, atol=2e-2)


def _diffusion_adapter() -> tuple[LeRobotPolicyAdapter, dict]:
    scene = make_scene(EnvConfig(task="pick_cube", image_size=32), n_frames=1)
    adapter = LeRobotPolicyAdapter(
        "diffusion", scene.spec, stats_with_image_stats(scene), chunk_size=6, n_action_steps=3,
        overrides={"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "num_inference_steps": 2},
    )
    batch = obs_to_batch(scene.frames[0])
    batch[ACTION_KEY] = torch.randn(1, adapter.chunk_size, scene.spec.action_dim)
    batch["action_is_pad"] = torch.zeros(1, adapter.chunk_size, dtype=torch.bool)
    return adapter, batch


def test_diffusion_unet_with_matmul_convs_has_the_same_loss_and_gradients() -> None:
    pytest.importorskip("diffusers", reason="LeRobot's Diffusion Policy needs lerobot[diffusion]")
    adapter, batch = _diffusion_adapter()
    twin = copy.deepcopy(adapter)
    assert convs_as_matmuls(twin) > 0
    assert twin.state_dict().keys() == adapter.state_dict().keys()
    losses = []
    for model in (adapter, twin):
        torch.manual_seed(1)  # the same noise and timesteps for both
        loss, _ = model(batch)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in adapter.named_parameters() if p.grad is not None}
    twin_grads = {n: p.grad for n, p in twin.named_parameters() if p.grad is not None}
    assert twin_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(twin_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    # Sampling (what evaluation runs) agrees with the stock policy from the same noise.
    torch.manual_seed(2)
    stock_chunk = adapter.eval().predict_chunk(batch)
    torch.manual_seed(2)
    first = twin.eval().predict_chunk(batch)
    torch.testing.assert_close(first, stock_chunk, rtol=1e-4, atol=1e-5)
    # Evaluation workers get a pickled copy of the policy.
    copied = pickle.loads(pickle.dumps(twin))
    torch.manual_seed(2)
    torch.testing.assert_close(copied.predict_chunk(batch), first)


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, n: int) -> None:
    for _ in range(n):
        optimizer.zero_grad()
        model(inputs).square().mean().backward()
        optimizer.step()


def _groups(model: nn.Sequential) -> list[dict]:
    return [{"params": model[0].parameters(), "lr": 1e-2, "weight_decay": 0.1}, {"params": model[2].parameters()}]


@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("options", [{}, {"amsgrad": True, "maximize": True, "eps": 1e-6}])
def test_fused_step_takes_the_same_steps_with_the_same_settings(kind, options: dict) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    twin = copy.deepcopy(model)
    plain = kind(_groups(model), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0, **options)
    fused = with_fused_step(kind(_groups(twin), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0, **options))
    assert type(fused) is kind and all(g["fused"] for g in fused.param_groups)
    settings = ("lr", "weight_decay", "betas", "eps", "amsgrad", "maximize")
    assert [[g[k] for k in settings] for g in fused.param_groups] == [
        [g[k] for k in settings] for g in plain.param_groups
    ]
    inputs = torch.randn(16, 6)
    _steps(model, plain, inputs, 5)
    _steps(twin, fused, inputs, 5)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="already stepped"):
        with_fused_step(fused)


def test_other_optimisers_are_left_as_they_are() -> None:
    sgd = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    assert with_fused_step(sgd) is sgd
    differentiable = torch.optim.Adam(nn.Linear(2, 2).parameters(), differentiable=True)
    assert with_fused_step(differentiable) is differentiable  # the fused step does not support it


def test_a_schedule_built_before_the_switch_is_refused() -> None:
    adam = torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=1e-3)
    torch.optim.lr_scheduler.LambdaLR(adam, lambda step: 1.0)
    with pytest.raises(ValueError, match="schedule already wraps"):
        with_fused_step(adam)


def test_cpu_recipes_of_lerobot_methods_use_the_kernels() -> None:
    pytest.importorskip("diffusers", reason="LeRobot's Diffusion Policy needs lerobot[diffusion]")
    scene = make_scene(EnvConfig(task="pick_cube", image_size=32), n_frames=1)
    recipe = build_recipe(
        "diffusion", scene.spec, stats_with_image_stats(scene), {}, ["pick"], steps=10,
        device=torch.device("cpu"),
        overrides={"diffusion": {"down_dims": [16, 32], "diffusion_step_embed_dim": 16}},
    )
    assert any(isinstance(m, MatmulConv1d) for m in recipe.model.modules())
    assert all(g["fused"] for g in recipe.optimizer.param_groups)
    # The schedule wraps the optimiser that steps, so the warm-up reaches the fused one.
    assert recipe.scheduler is not None and recipe.scheduler.optimizer is recipe.optimizer


def test_kernel_benchmark_times_four_variants_and_leaves_the_docs_alone(tmp_path) -> None:
    pytest.importorskip("diffusers", reason="LeRobot's Diffusion Policy needs lerobot[diffusion]")
    import importlib.util
    import json
    from pathlib import Path

    from vla.benchmarks import DOC

    root = Path(__file__).resolve().parents[2]
    path = root / "scripts" / "bench_baseline_kernels.py"
    spec = importlib.util.spec_from_file_location("bench_baseline_kernels", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    before = DOC.read_text() if DOC.exists() else None
    threads = torch.get_num_threads()
    try:
        rows = script.main(["--task", "pick_cube", "--image-size", "32", "--batch-size", "2", "--steps", "2",
                            "--rounds", "2", "--warmup", "0", "--threads", "1", "--set", "down_dims=[16,32]",
                            "diffusion_step_embed_dim=16", "--no-write", "--json", str(tmp_path / "k.json")])
    finally:
        torch.set_num_threads(threads)
    assert [(r.kernels, r.precision) for r in rows] == [
        ("stock", "fp32"), ("stock", "bf16 autocast"), ("cpu_kernels", "fp32"), ("cpu_kernels", "bf16 autocast")
    ]
    assert all(len(r.step.seconds) == 2 and r.samples_per_s > 0 for r in rows)
    assert len(json.loads((tmp_path / "k.json").read_text())["rows"]) == 4
    assert (DOC.read_text() if DOC.exists() else None) == before
    with pytest.raises(SystemExit):
        script.main(["--steps", "1", "--rounds", "2", "--no-write"])
