import itertools

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.expert import CLOSE_TICKS, ScriptedExpert
from envs.robots import ROBOTS, get_robot
from envs.scene import build_model
from envs.tabletop import TabletopEnv
from envs.tasks import TASKS


@pytest.fixture
def pick_cube():
    env = TabletopEnv(task="pick_cube", image_size=32)
    yield env
    env.close()


@pytest.mark.parametrize("robot", sorted(ROBOTS))
@pytest.mark.parametrize("task", sorted(TASKS))
def test_scene_compiles_and_steps_without_warnings(robot, task):
    t = TASKS[task]() if task != "pick_cube" else TASKS[task](distractors=2)
    model = build_model(get_robot(robot), t.n_cubes, t.n_pads, get_robot(robot).cube_half, 64)
    data = mujoco.MjData(model)
    mujoco.mj_step(model, data, nstep=500)
    assert all(w.number == 0 for w in data.warning), [(i, w.number) for i, w in enumerate(data.warning)]


def test_robot_mjcf_alone_compiles_without_warnings():
    model = mujoco.MjModel.from_xml_path(str(get_robot("arm6").mjcf))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_step(model, data, nstep=500)
    assert all(w.number == 0 for w in data.warning)
    # Gravity-compensated servos hold the home pose.
    np.testing.assert_allclose(data.qpos[:6], model.key("home").qpos[:6], atol=0.02)


@pytest.mark.parametrize("env_id", sorted(envs.ENV_IDS.values()))
def test_gymnasium_checker_passes(env_id):
    env = gym.make(env_id, image_size=32)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_seeding_is_deterministic():
    a, b = TabletopEnv(task="pick_place", image_size=32), TabletopEnv(task="pick_place", image_size=32)
    oa, _ = a.reset(seed=11)
    ob, _ = b.reset(seed=11)
    assert oa["task"] == ob["task"]
    for k in oa:
        if k != "task":
            np.testing.assert_array_equal(oa[k], ob[k])
    action = a.action_space.sample()
    np.testing.assert_array_equal(a.step(action)[0]["observation.state"], b.step(action)[0]["observation.state"])
    oc, _ = a.reset(seed=12)
    assert not np.array_equal(oc["observation.images.front"], oa["observation.images.front"])
    a.close()
    b.close()


def test_observation_layout(pick_cube):
    obs, info = pick_cube.reset(seed=0)
    assert obs["observation.images.front"].shape == (32, 32, 3)
    assert obs["observation.images.front"].dtype == np.uint8
    assert obs["observation.state"].shape == (7,)
    assert "cube" in obs["task"] and info["is_success"] is False
    assert pick_cube.state_names[-1] == "gripper"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_solves_seeded_episodes(task):
    env = TabletopEnv(task=task, cameras=())
    for seed in range(3):
        env.reset(seed=100 + seed)
        expert = ScriptedExpert(env)
        for _ in range(env.max_steps):
            _, _, terminated, truncated, info = env.step(expert.act())
            if terminated or truncated:
                break
        assert info["is_success"], f"{task} seed {100 + seed} failed in phase {expert.phase}"
    env.close()


@pytest.mark.parametrize("robot", sorted(ROBOTS))
@pytest.mark.parametrize("task", ["pick_place", "stack"])
def test_expert_lowers_without_going_back_up(task, robot):
    """Once the expert lowers the hand onto a cube or the cube onto its place, it does not go back up.

    Demos that alternate up and down in the same state teach a policy to hover there (the average).
    """
    env = TabletopEnv(task=task, robot=robot, cameras=())
    back_up = {"descend": ("approach", "clear"), "place": ("carry", "lift")}
    for seed in range(6):
        env.reset(seed=200 + seed)
        expert = ScriptedExpert(env)
        phases = ["start"]
        for _ in range(env.max_steps):
            _, _, terminated, truncated, info = env.step(expert.act())
            phases.append(expert.phase)
            if info["is_success"] or terminated or truncated:
                break
        assert info["is_success"], f"{task}/{robot} seed {200 + seed} failed in phase {expert.phase}"
        assert "place" in phases
        turns = [(a, b) for a, b in itertools.pairwise(phases) if b in back_up.get(a, ())]
        assert not turns, f"{task}/{robot} seed {200 + seed}: went back up {turns} in {' '.join(phases)}"
    env.close()


def test_expert_recovers_from_a_dropped_cube():
    """Closed loop: open the gripper mid-carry; the expert grasps again and finishes."""
    env = TabletopEnv(task="pick_place", cameras=())
    env.reset(seed=5)
    expert = ScriptedExpert(env)
    dropped = False
    for _ in range(env.max_steps + 60):
        action = expert.act()
        if expert.phase == "carry" and not dropped:
            action[-1] = 0.0  # the "policy" lets go
            for _ in range(5):
                env.step(action)
            dropped = True
            continue
        _, _, terminated, _, info = env.step(action)
        if terminated:
            break
    assert dropped and info["is_success"]
    env.close()


def test_expert_opens_after_a_miss_at_the_grasp_pose(monkeypatch):
    """A grasp that fails with the hand at the grasp pose is followed by opening, not by closing on and on."""
    env = TabletopEnv(task="pick_cube", cameras=())
    env.reset(seed=3)
    expert = ScriptedExpert(env)
    monkeypatch.setattr(env, "is_grasped", lambda cube: False)  # every grasp misses
    phases, grippers = [], []
    for _ in range(100):
        action = expert.act()
        phases.append(expert.phase)
        grippers.append(float(action[-1]))
        env.step(action)
    closing_runs = [len(list(run)) for phase, run in itertools.groupby(phases) if phase == "grasp"]
    assert max(closing_runs) > CLOSE_TICKS, f"never closed for a whole grasp: {' '.join(phases)}"
    assert max(closing_runs) <= CLOSE_TICKS + 4, f"kept the jaws shut on a miss: {' '.join(phases)}"
    assert len(closing_runs) >= 3  # tried again, more than once
    assert all(g == 0.0 for g, phase in zip(grippers, phases, strict=True) if phase == "open")
    env.close()


def test_expert_takes_over_from_a_half_open_gripper_far_away():
    env = TabletopEnv(task="pick_cube", cameras=(), max_steps=120)
    env.reset(seed=3)
    low = env.action_space.low
    bad = np.append((env.arm_qpos() + low[:-1] * 0.1), 0.5).astype(np.float32)
    for _ in range(8):
        env.step(bad)
    expert = ScriptedExpert(env)
    for _ in range(110):
        _, _, terminated, truncated, info = env.step(expert.act())
        if terminated or truncated:
            break
    assert info["is_success"]
    env.close()


def test_bad_actions_raise_clear_errors(pick_cube):
    pick_cube.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        pick_cube.step(np.zeros(3))
    nan = np.zeros(7)
    nan[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pick_cube.step(nan)
    inf = np.zeros(7)
    inf[6] = np.inf
    with pytest.raises(ValueError, match=r"index|indices"):
        pick_cube.step(inf)


def test_unknown_names_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown task"):
        TabletopEnv(task="juggle")
    with pytest.raises(ValueError, match="unknown robot"):
        TabletopEnv(robot="r2d2")
    with pytest.raises(ValueError, match="unknown colour"):
        TabletopEnv(task="pick_place", task_kwargs={"colours": ["red", "mauve", "blue"]})
    with pytest.raises(ValueError, match="unknown camera"):
        TabletopEnv(cameras=("ceiling",))


def test_heldout_split_is_disjoint_from_train():
    from envs.tasks.language import heldout_pairs

    held = heldout_pairs()
    for split, inside in (("train", False), ("heldout", True)):
        env = TabletopEnv(task="pick_place", cameras=(), task_kwargs={"split": split})
        for seed in range(15):
            env.reset(seed=seed)
            ep = env.episode
            pair = (ep.cube_colours[ep.object_index], ep.pad_colours[ep.target_index])
            assert (pair in held) == inside
            assert ep.cube_colours[0] in env.episode.instruction
        env.close()


def test_distractors_present_and_instruction_names_the_object():
    env = TabletopEnv(task="pick_place", cameras=())
    _, info = env.reset(seed=2)
    ep = env.episode
    assert len(set(ep.cube_colours)) == 3 and len(set(ep.pad_colours)) == 3
    assert ep.cube_colours[0] in ep.instruction and ep.pad_colours[0] in ep.instruction
    # The info names the goal's colours, which evaluation reports group success by.
    assert (info["object"], info["target"]) == (ep.cube_colours[0], ep.pad_colours[0])
    env.close()


@pytest.mark.parametrize(("task", "target_kind"), [("pick_cube", None), ("stack", "cube")])
def test_info_names_the_target_of_each_task(task, target_kind):
    env = TabletopEnv(task=task, cameras=())
    _, info = env.reset(seed=3)
    ep = env.episode
    if target_kind is None:
        assert info["target"] is None
    else:
        assert info["target"] == ep.cube_colours[ep.target_index] != info["object"]
    env.close()


@pytest.mark.parametrize(("task", "swap"), [("pick_place", "object"), ("pick_place", "target"),
                                            ("pick_place", "both"), ("stack", "both")])
def test_instruction_swap_keeps_the_scene_and_renames_the_roles(task, swap):
    plain = TabletopEnv(task=task, image_size=32)
    swapped = TabletopEnv(task=task, image_size=32, task_kwargs={"instruction_swap": swap})
    for seed in range(4):
        obs_plain, _ = plain.reset(seed=seed)
        obs_swapped, _ = swapped.reset(seed=seed)
        for key in obs_plain:
            if key != "task":
                np.testing.assert_array_equal(obs_plain[key], obs_swapped[key], err_msg=key)
        a, b = plain.episode, swapped.episode
        assert a.swapped_from is None and b.swapped_from == (a.object_index, a.target_index)
        assert (b.object_index != a.object_index) == (swap in ("object", "both"))
        assert (b.target_index != a.target_index) == (swap in ("target", "both"))
        targets = b.pad_colours if task == "pick_place" else b.cube_colours
        assert b.cube_colours[b.object_index] in obs_swapped["task"]
        assert targets[b.target_index] in obs_swapped["task"]
        if task == "stack":
            assert b.object_index != b.target_index
    plain.close()
    swapped.close()


def test_expert_follows_the_swapped_instruction():
    env = TabletopEnv(task="pick_place", cameras=(), task_kwargs={"instruction_swap": "both"})
    env.reset(seed=7)
    expert = ScriptedExpert(env)
    for _ in range(env.max_steps):
        _, _, terminated, truncated, info = env.step(expert.act())
        if terminated or truncated:
            break
    ep = env.episode
    assert info["is_success"] and (ep.object_index, ep.target_index) != ep.swapped_from
    env.close()


@pytest.mark.parametrize(("swap", "expected"), [
    ("object", [(2, 1)]),  # neither the original top cube nor the bottom one
    ("target", [(0, 2)]),
    ("both", [(1, 0), (1, 2), (2, 0)]),  # never a cube on itself
])
def test_stack_swap_candidates(swap, expected):
    from envs.tasks import Stack

    assert Stack(instruction_swap=swap)._swap_candidates(0, 1) == expected


def test_pick_cube_swap_names_any_other_cube():
    from envs.tasks import PickCube

    assert PickCube(distractors=2, instruction_swap="object")._swap_candidates(0, None) == [(1, None), (2, None)]


@pytest.mark.parametrize(("task", "kwargs", "match"), [
    ("pick_cube", {"instruction_swap": "object"}, "distractors >= 1"),
    ("pick_cube", {"instruction_swap": "target", "distractors": 2}, "no target"),
    ("pick_place", {"instruction_swap": "colour"}, "not one of"),
    ("pick_place", {"instruction_swap": "both", "split": "heldout"}, "use split=all"),
])
def test_impossible_instruction_swaps_raise_clear_errors(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TabletopEnv(task=task, cameras=(), task_kwargs=kwargs)
