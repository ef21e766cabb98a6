"""A recording prints lerobot's per-open notices once, not once per flushed episode."""

from __future__ import annotations

import logging
from collections import Counter

from data_helpers import write_demos

from vla.data.recorder import REPEATED_LEROBOT_NOTICES, OncePerProcess


def test_once_per_process_passes_each_message_once():
    once = OncePerProcess()

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("lerobot.configs.video", logging.INFO, __file__, 1, msg, None, None)

    assert [once.filter(record(m)) for m in ("a", "b", "a", "b", "c")] == [True, True, False, False, True]


def test_a_recording_flushed_every_episode_logs_each_lerobot_notice_once(tmp_path, caplog, monkeypatch):
    # Start from loggers without the filter, as in a fresh process (an earlier test may have attached it).
    for name in REPEATED_LEROBOT_NOTICES:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "filters", [f for f in logger.filters if not isinstance(f, OncePerProcess)])
    caplog.set_level(logging.INFO)
    write_demos(tmp_path / "demos", flush_every=1)  # 4 episodes: the dataset is created and reopened 4 times
    notices = Counter(r.getMessage() for r in caplog.records if r.name in REPEATED_LEROBOT_NOTICES)
    assert notices, "lerobot logged none of its per-open notices; REPEATED_LEROBOT_NOTICES names the wrong loggers"
    assert max(notices.values()) == 1, notices
