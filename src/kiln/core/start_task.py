"""A pool's start task on one node: its `startTaskInfo` (batch-semantics-2 §5.1) and what follows a run."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiln.core import task as task_rules
from kiln.core.retry import Decision, after_exit
from kiln.wire.times import format_time

#: startTaskInfo as stored on the node row (camelCase, as rendered).
Info = dict[str, Any]


class Outcome(StrEnum):
    """What a finished run of the start task leads to."""

    RETRY = "retry"  #: it exited non-zero with retries left: run it again
    SUCCEEDED = "succeeded"
    FAILED = "failed"  #: retries exhausted, or it could not run at all


def first_run(now: datetime) -> Info:
    """A (re)started node runs its start task afresh: retryCount and lastRetryTime start over."""
    return {"state": "running", "startTime": format_time(now), "retryCount": 0}


def retried(info: Mapping[str, Any], now: datetime) -> Info:
    """startTime is reset on every retry; endTime, exitCode and result belong to the run that ended."""
    return {
        "state": "running",
        "startTime": format_time(now),
        "retryCount": info["retryCount"] + 1,
        "lastRetryTime": format_time(now),
    }


def completed(info: Mapping[str, Any], ended: datetime, exit_code: int | None, failure: dict[str, Any] | None) -> Info:
    """A run ended: endTime and exitCode of that run, failureInfo when it failed."""
    done: Info = {**info, "state": "completed", "endTime": format_time(ended)}
    if exit_code is not None:
        done["exitCode"] = exit_code
    if failure is None and exit_code != 0:
        failure = task_rules.exit_failure(exit_code)
    done["result"] = "success" if failure is None else "failure"
    if failure is not None:
        done["failureInfo"] = failure
    return done


def outcome(
    spec: Mapping[str, Any], info: Mapping[str, Any], exit_code: int | None, failure: dict[str, Any] | None
) -> Outcome:
    """Non-zero exits are retried up to maxTaskRetryCount (-1: no limit); a run that could not start is not."""
    if exit_code == 0 and failure is None:
        return Outcome.SUCCEEDED
    decision = after_exit(
        exit_code if exit_code is not None else 1,
        retry_count=info["retryCount"],
        max_retries=spec.get("maxTaskRetryCount", 0),
        retriable=exit_code is not None,
    )
    return Outcome.RETRY if decision is Decision.RETRY else Outcome.FAILED


def failed_errors(info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The node's `errors` once its start task has failed for good: what happened and what to do."""
    failure = info.get("failureInfo") or {}
    runs = info["retryCount"] + 1
    what = f"exited with code {info['exitCode']}" if "exitCode" in info else "could not run"
    return [
        {
            "code": "StartTaskFailed",
            "message": (
                f"The pool's start task {what} on its last run ({runs} run(s) in all, maxTaskRetryCount allowing"
                " no more) and its waitForSuccess is true, so no task is scheduled on this node. Read"
                " startup/stderr.txt and startup/stdout.txt through the node's files, fix the start task (a pool"
                " update), then reboot or reimage the node to run it again."
            ),
            "errorDetails": [
                {"name": "ExitCode", "value": str(info.get("exitCode"))},
                *([{"name": "Message", "value": failure["message"]}] if failure.get("message") else []),
            ],
        }
    ]
