"""Record scripted-expert demonstrations into a local LeRobotDataset.

    python scripts/collect.py env=pick_place episodes=200 workers=2
    python scripts/collect.py env=pick_place episodes=1000 writers=15   # many cores: each writes a shard
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from vla.data.collect import CollectConfig, collect
from vla.data.collect_shards import collect_in_shards
from vla.reporting import print_table

ConfigStore.instance().store(name="collect_schema", node=CollectConfig)


@hydra.main(config_path="../conf", config_name="collect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config: CollectConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    s = collect_in_shards(config) if config.writers > 1 else collect(config)
    print_table(
        f"Demonstrations: {config.env.task} on {config.env.robot}",
        {
            "dataset root": s.root,
            "episodes recorded now": s.recorded,
            "episodes in dataset": s.total_episodes,
            "discarded (expert failed)": s.discarded,
            "frames recorded now": s.frames,
            "episodes with a deliberate miss": s.with_miss,
            "expert success": f"{100 * s.expert_success:.1f}% of {s.attempts}" if s.attempts else "n/a",
            "seconds": f"{s.seconds:.1f}",
        },
    )


if __name__ == "__main__":
    main()
