"""Baselines the VLA is benchmarked against, behind the same policy contract and the same evaluation.

* ``lerobot_adapter``: LeRobot's ACT and Diffusion Policy built from our dataset's features and stats,
  trained on our chunk batches and acting in our envs through ``vla.eval.rollout.evaluate_policy``;
* ``reference_vlm``: a straightforward transformers model of the VLA's size, the training-speed yardstick;
* ``methods`` / ``fit``: every compared method as one recipe (model, loss, optimiser), trained by one loop;
* ``speed`` / ``timing``: the measurements of ``scripts/bench_speed.py``.

Nothing is imported here: LeRobot's policy modules are heavy and only the policy benchmark needs them.
"""
