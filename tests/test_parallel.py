"""run_in_processes: results in order, a job's error and a dead process named, the other jobs stopped."""

import os
import time

import pytest

from vla.parallel import JobFailed, run_in_processes


def _square(x: int) -> int:
    return x * x


def _fail(message: str) -> None:
    raise KeyError(message)


def _die(code: int) -> None:
    os._exit(code)


def _sleep_then_square(x: int) -> int:
    time.sleep(x)
    return x * x


def test_results_come_back_in_job_order_with_fewer_slots_than_jobs():
    polls = []
    got = run_in_processes(_sleep_then_square, [(1,), (0,), (2,)], ["a", "b", "c"], max_running=2,
                           on_poll=lambda: polls.append(1), poll_s=0.2)
    assert got == [1, 0, 4]
    assert polls  # the two-second job outlives a poll


def test_a_job_that_raises_is_named_with_its_traceback():
    with pytest.raises(JobFailed, match="first") as info:
        run_in_processes(_fail, [("x",)] * 2, ["first", "second"], max_running=1)
    assert info.value.name == "first" and "KeyError: 'x'" in info.value.detail


@pytest.mark.parametrize("code", [0, 9])
def test_a_process_that_dies_without_reporting_is_named(code):
    with pytest.raises(JobFailed, match=f"exit code {code}") as info:
        run_in_processes(_die, [(code,)], ["crashing job"], max_running=1, poll_s=0.2)
    assert info.value.name == "crashing job"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="2 jobs but 1 names"):
        run_in_processes(_square, [(1,), (2,)], ["a"], max_running=1)
    with pytest.raises(ValueError, match="max_running must be >= 1"):
        run_in_processes(_square, [(1,)], ["a"], max_running=0)
