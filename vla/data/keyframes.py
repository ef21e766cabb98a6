"""Hindsight keyframes of a demonstration: where the arm was when it grasped and when it released.

In a pick-and-place demo the arm's configuration at the moment the gripper closes says where the named
object was, and its configuration when the gripper opens again says where the named target was. Both are
read off the recorded episode after the fact (no simulator state is needed), and both are the same for
every frame of the episode, so they give every training frame a target that only the image and the
instruction can explain: the arm's own state cannot. ``vla/heads/goal.py`` predicts them as an
auxiliary loss; ``keyframe_pixels`` turns them into image positions that supervise the grounding slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np
import torch

from envs.camera import project_to_pixels
from envs.config import EnvConfig, make_env

if TYPE_CHECKING:
    from envs.tabletop import TabletopEnv
    from vla.data.dataset import FrameStore

# Keyframes per episode, in this order.
KEYFRAMES = ("grasp", "release")


def gripper_keyframes(
    action: torch.Tensor, episode_end: torch.Tensor, gripper_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: the frame indices of its episode's grasp and release, and whether each exists.

    ``action`` (N, A) and ``episode_end`` (N,) follow ``FrameStore`` (episodes contiguous, ``episode_end``
    the exclusive end of each frame's episode). The grasp is the first frame whose gripper command differs
    from the episode's first one; the release is the first frame after it that returns to that value.
    Returns ``frames`` (N, 2) int64 (0 where missing) and ``valid`` (N, 2) bool.
    """
    n = action.shape[0]
    frames = torch.zeros(n, len(KEYFRAMES), dtype=torch.long)
    valid = torch.zeros(n, len(KEYFRAMES), dtype=torch.bool)
    gripper = action[:, gripper_dim]
    start = 0
    for end in torch.unique_consecutive(episode_end).tolist():
        g = gripper[start:end]
        changed = torch.nonzero(g != g[0]).flatten()
        if changed.numel():
            grasp = int(changed[0])
            frames[start:end, 0], valid[start:end, 0] = start + grasp, True
            back = torch.nonzero(g[grasp:] == g[0]).flatten()
            if back.numel():
                frames[start:end, 1], valid[start:end, 1] = start + grasp + int(back[0]), True
        start = end
    return frames, valid


def keyframe_pixels(env: TabletopEnv, state: torch.Tensor, keyframes: tuple[torch.Tensor, torch.Tensor],
                    cameras: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame and camera: where the hand was at its episode's grasp and release, in that frame's image.

    The hand's position at the grasp is where the named object was, and at the release where the named
    target is, so these are image-space targets for the grounding slots (vla/backbones/grounding.py) read
    off the demo alone: forward kinematics of the recorded keyframe joints, then each camera's projection
    at the frame's own arm pose (a wrist camera moves with the arm; a fixed one does not).
    ``env`` is a scratch env of the demos' robot and image size; its arm is moved around. ``state`` (N, S)
    and ``keyframes`` follow ``gripper_keyframes``. Returns pixel coordinates (N, n_cameras, 2, 2) float32
    and (N, n_cameras, 2) bool: the keyframe exists and its point is in view.
    """
    frames, valid = keyframes[0].numpy(), keyframes[1].numpy()
    n = state.shape[0]
    states = state.double().numpy()
    key_frames, which = np.unique(frames, return_inverse=True)
    hand_at = np.empty((len(key_frames), 3))
    for j, f in enumerate(key_frames):
        env.pose_arm(states[f])
        hand_at[j] = env.ee_pos()
    hand = hand_at[which.reshape(frames.shape)]  # (N, 2, 3)
    hand[~valid] = np.nan
    pixels = np.zeros((n, len(cameras), len(KEYFRAMES), 2), dtype=np.float32)
    seen = np.zeros((n, len(cameras), len(KEYFRAMES)), dtype=bool)
    ids = [env.camera_id(c) for c in cameras]
    # A fixed-mode camera on the world body never moves: project every frame's points at once.
    fixed = [c for c, cam in enumerate(ids)
             if env.model.cam_bodyid[cam] == 0 and env.model.cam_mode[cam] == mujoco.mjtCamLight.mjCAMLIGHT_FIXED]
    moving = [c for c in range(len(ids)) if c not in fixed]
    env.pose_arm(states[0])  # any pose: it computes the camera poses the projection reads
    for c in fixed:
        px, vis = project_to_pixels(env.model, env.data, ids[c], hand.reshape(-1, 3), env.image_size)
        pixels[:, c], seen[:, c] = px.reshape(n, -1, 2), vis.reshape(n, -1)
    if moving:
        for i in range(n):
            env.pose_arm(states[i])
            for c in moving:
                pixels[i, c], seen[i, c] = project_to_pixels(env.model, env.data, ids[c], hand[i], env.image_size)
    seen &= valid[:, None, :]
    return torch.from_numpy(np.nan_to_num(pixels)), torch.from_numpy(seen)


def grounding_targets(store: FrameStore, env_cfg: EnvConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The grounding slots' image-space targets for every frame of ``store`` (``keyframe_pixels``), computed
    with a scratch env of the training config's robot and cameras, which must match the demos' images."""
    if not store.spec.gripper_dims:
        raise ValueError("grounding targets come from the gripper keyframes, and this dataset's actions have no "
                         "gripper dim; set model.grounding_loss_weight=0")
    env = make_env(env_cfg)
    try:
        base = env.unwrapped
        if (base.image_size, base.image_size) != tuple(store.spec.image_shape[1:]) or \
                not set(store.spec.cameras) <= set(base.cameras):
            raise ValueError(
                f"the demos have cameras {list(store.spec.cameras)} at {tuple(store.spec.image_shape[1:])} and env "
                f"{env_cfg.task!r} renders {list(base.cameras)} at {base.image_size} px: the grounding targets are "
                "projected through the env's cameras, so set env.image_size (and env.cameras) to the demos'"
            )
        keyframes = gripper_keyframes(store.action, store.episode_end, store.spec.gripper_dims[0])
        return keyframe_pixels(base, store.state, keyframes, store.spec.cameras)
    finally:
        env.close()


def keyframe_dataset_options(
    store: FrameStore, env_cfg: EnvConfig, goal_loss_weight: float, grounding_loss_weight: float, goal_frames: str
) -> dict[str, Any]:
    """The ``ChunkDataset`` keyword arguments that give a policy's keyframe losses their targets: the
    keyframe goals when either loss is on, and the grounding slots' pixels (projected through a scratch
    ``env_cfg`` env) when the grounding loss is on. The training app and the policy comparison both
    build their datasets through this, so a compared VLA trains on exactly what ``scripts/train.py`` does."""
    options: dict[str, Any] = {
        "keyframe_goals": goal_loss_weight > 0 or grounding_loss_weight > 0,
        "goal_frames": goal_frames,
    }
    if grounding_loss_weight > 0:
        options["keyframe_pixels"] = grounding_targets(store, env_cfg)
    return options
