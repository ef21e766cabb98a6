"""Hindsight keyframes of a demonstration: where the arm was when it grasped and when it released.

In a pick-and-place demo the arm's configuration at the moment the gripper closes says where the named
object was, and its configuration when the gripper opens again says where the named target was. Both are
read off the recorded episode after the fact (no simulator state is needed), and both are the same for
every frame of the episode, so they give every training frame a target that only the image and the
instruction can explain: the arm's own state cannot. ``vla/heads/goal.py`` predicts them as an
auxiliary loss.
"""

from __future__ import annotations

import torch

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
