"""startTaskInfo (batch-semantics-2 §5.1) and what a finished run leads to, as data."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.core import start_task
from kiln.core.start_task import Outcome
from kiln.wire.times import format_time

from .helpers import NOW, T0

T0_TEXT, NOW_TEXT = format_time(T0), format_time(NOW)
EXIT_FAILURE = {
    "category": "usererror",
    "code": "FailureExitCode",
    "message": "The task process exited with an unexpected exit code: 3",
    "details": [{"name": "AdditionalErrorCode", "value": "FailureExitCode"}],
}
LAUNCH_FAILURE = {"category": "usererror", "code": "CommandProgramNotFound", "message": "no such program"}


def test_a_first_run_starts_over() -> None:
    assert start_task.first_run(NOW) == {"state": "running", "startTime": NOW_TEXT, "retryCount": 0}


def test_a_retry_resets_start_time_and_drops_the_last_runs_end() -> None:
    ended = {"state": "completed", "startTime": T0_TEXT, "endTime": T0_TEXT, "exitCode": 3, "retryCount": 1}
    assert start_task.retried(ended, NOW) == {
        "state": "running",
        "startTime": NOW_TEXT,
        "retryCount": 2,
        "lastRetryTime": NOW_TEXT,
    }


@pytest.mark.parametrize(
    ("exit_code", "failure", "expected"),
    [
        (0, None, {"exitCode": 0, "result": "success"}),
        (3, None, {"exitCode": 3, "result": "failure", "failureInfo": EXIT_FAILURE}),
        (None, LAUNCH_FAILURE, {"result": "failure", "failureInfo": LAUNCH_FAILURE}),
    ],
)
def test_a_completed_run(exit_code: int | None, failure: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    running = start_task.first_run(T0)
    done = start_task.completed(running, NOW, exit_code, failure)
    assert done == {"state": "completed", "startTime": T0_TEXT, "endTime": NOW_TEXT, "retryCount": 0, **expected}


#: (maxTaskRetryCount, retryCount so far, exit code, failure) -> outcome
OUTCOMES = [
    (0, 0, 0, None, Outcome.SUCCEEDED),
    (0, 0, 3, None, Outcome.FAILED),  # the default: one run
    (2, 0, 3, None, Outcome.RETRY),
    (2, 1, 3, None, Outcome.RETRY),
    (2, 2, 3, None, Outcome.FAILED),  # three runs in all
    (-1, 50, 3, None, Outcome.RETRY),  # unlimited
    (5, 0, None, LAUNCH_FAILURE, Outcome.FAILED),  # could not run: not retried
    (5, 1, 0, None, Outcome.SUCCEEDED),
]


@pytest.mark.parametrize(("max_retries", "retries", "exit_code", "failure", "expected"), OUTCOMES)
def test_outcome(
    max_retries: int, retries: int, exit_code: int | None, failure: dict[str, Any] | None, expected: Outcome
) -> None:
    spec = {"commandLine": "x", "maxTaskRetryCount": max_retries, "waitForSuccess": True}
    assert start_task.outcome(spec, {"retryCount": retries}, exit_code, failure) is expected


def test_failed_errors_say_what_happened_and_what_to_do() -> None:
    done = start_task.completed({**start_task.first_run(T0), "retryCount": 2}, NOW, 3, None)
    (error,) = start_task.failed_errors(done)
    assert error["code"] == "StartTaskFailed"
    assert "exited with code 3" in error["message"] and "3 run(s)" in error["message"]
    assert "reboot or reimage" in error["message"]
    assert {"name": "ExitCode", "value": "3"} in error["errorDetails"]
