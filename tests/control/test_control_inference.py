"""Background chunk inference: results, errors, timeouts, latency figures."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vla.supervision.inference import AsyncInference, latency_summary


def test_result_carries_the_request_tick_and_latency():
    with AsyncInference(lambda obs: np.full((2, 3), obs["x"]), timeout_s=1.0) as inf:
        assert inf.submit({"x": 7.0}, tick=4)
        result = inf.wait()
    assert result is not None and result.tick == 4 and result.error is None
    np.testing.assert_allclose(result.chunk, 7.0)
    assert result.latency_s >= 0 and len(inf.latencies) == 1


def test_one_request_in_flight_and_submit_does_not_block():
    release = threading.Event()

    def slow(obs):
        release.wait(2.0)
        return np.zeros((1, 1))

    with AsyncInference(slow, timeout_s=5.0) as inf:
        t0 = time.perf_counter()
        assert inf.submit({}, 0)
        assert time.perf_counter() - t0 < 0.05
        assert inf.busy and not inf.submit({}, 1)  # refused while one is running
        assert inf.poll() is None
        release.set()
        assert inf.wait() is not None
        assert not inf.busy and inf.submit({}, 2)


def test_errors_are_reported_not_raised():
    def broken(obs):
        raise RuntimeError("boom")

    with AsyncInference(broken, timeout_s=1.0) as inf:
        inf.submit({}, 0)
        result = inf.wait()
        assert isinstance(result.error, RuntimeError) and result.chunk is None
        inf.submit({}, 1)  # the worker survived the exception
        assert inf.wait().error is not None


def test_timeout_is_reported_once_and_the_late_answer_is_dropped():
    with AsyncInference(lambda obs: (time.sleep(1.5), np.ones((1, 1)))[1], timeout_s=0.05) as inf:
        inf.submit({}, 0)
        # Wait well past the request's timeout: on a loaded machine the worker may start late.
        result = inf.wait(timeout_s=5.0)
        assert result is not None and result.timed_out and isinstance(result.error, TimeoutError)
        assert inf.busy and inf.stalled and inf.poll() is None  # abandoned but still running: no second report
        deadline = time.perf_counter() + 10.0
        while inf.busy and time.perf_counter() < deadline:
            assert inf.poll() is None  # the late chunk never reaches the caller
            time.sleep(0.02)
        assert inf.poll() is None and not inf.busy
        assert inf.timeouts == 1 and len(inf.latencies) == 1 and inf.latencies[0] >= 1.5


def test_latency_summary():
    s = latency_summary([0.01] * 99 + [0.1])
    assert s["median_ms"] == pytest.approx(10.0)
    assert s["p99_ms"] == pytest.approx(np.percentile([10.0] * 99 + [100.0], 99))
    assert s["max_ms"] == pytest.approx(100.0) and s["count"] == 100
    assert np.isnan(latency_summary([])["median_ms"])


def test_bad_timeout_is_refused():
    with pytest.raises(ValueError, match="inference_timeout_s"):
        AsyncInference(lambda obs: None, timeout_s=0)
