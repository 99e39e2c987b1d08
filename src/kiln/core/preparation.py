"""The per-(job, node) record of the job preparation and release tasks (batch-semantics §4.2-4.3).

Prep and release each have a small lifecycle on the same record. A prep that ends in failure
excludes the node from the job until the node is reimaged (a new incarnation).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiln.core import lifecycle
from kiln.core.lifecycle import Changes


class StepState(StrEnum):
    """Both prep and release: not run yet (pending), running, completed (with a result)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"


def _start(prefix: str):
    def handler(row: Mapping[str, Any], now: datetime, *, attempt: int, **_: Any) -> Changes:
        return {
            f"{prefix}_start_time": now,
            f"{prefix}_end_time": None,
            f"{prefix}_exit_code": None,
            f"{prefix}_result": None,
            f"{prefix}_failure_info": None,
            f"{prefix}_attempt": attempt,
        }

    return handler


def _finish(prefix: str):
    def handler(
        row: Mapping[str, Any], now: datetime, *, exit_code: int | None, failure_info: dict | None, **_: Any
    ) -> Changes:
        return {
            f"{prefix}_end_time": now,
            f"{prefix}_exit_code": exit_code,
            f"{prefix}_failure_info": failure_info,
            f"{prefix}_result": "failure" if failure_info else "success",
        }

    return handler


def _prep_retry(row: Mapping[str, Any], now: datetime, *, attempt: int, **_: Any) -> Changes:
    return {
        **_start("prep")(row, now, attempt=attempt),
        "prep_retry_count": row["prep_retry_count"] + 1,
        "prep_last_retry_time": now,
    }


def _reset(prefix: str):
    def handler(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
        return {
            f"{prefix}_start_time": None,
            f"{prefix}_end_time": None,
            f"{prefix}_exit_code": None,
            f"{prefix}_result": None,
            f"{prefix}_failure_info": None,
        }

    return handler


S = StepState
PREP_TRANSITIONS: lifecycle.Table = {
    (S.PENDING, S.RUNNING): _start("prep"),
    (S.RUNNING, S.RUNNING): _prep_retry,  # a non-zero exit with retries left
    (S.RUNNING, S.COMPLETED): _finish("prep"),
    (S.RUNNING, S.PENDING): _reset("prep"),  # the node was lost or rebooted mid-prep: run it again
    (S.COMPLETED, S.PENDING): _reset("prep"),  # reboot without rerunOnNodeRebootAfterSuccess=false, or reimage
}

RELEASE_TRANSITIONS: lifecycle.Table = {
    (S.PENDING, S.RUNNING): _start("release"),
    (S.RUNNING, S.COMPLETED): _finish("release"),
    (S.RUNNING, S.PENDING): _reset("release"),  # the node rebooted mid-release: it runs again
}


def prep(row: Mapping[str, Any], to: StepState, now: datetime, **event: Any) -> Changes:
    return lifecycle.transition(
        PREP_TRANSITIONS, row, to, now, state_field="prep_state", track_previous=False, kind="prep", **event
    )


def release(row: Mapping[str, Any], to: StepState, now: datetime, **event: Any) -> Changes:
    return lifecycle.transition(
        RELEASE_TRANSITIONS, row, to, now, state_field="release_state", track_previous=False, kind="release", **event
    )


def new_record(job_key: str, pool_id: str, node_id: str, incarnation: int) -> dict[str, Any]:
    return {
        "job_key": job_key,
        "pool_id": pool_id,
        "node_id": node_id,
        "incarnation": incarnation,
        "prep_state": S.PENDING.value,
        "prep_retry_count": 0,
        "prep_attempt": 0,
        "release_state": S.PENDING.value,
        "release_attempt": 0,
    }


def succeeded(row: Mapping[str, Any]) -> bool:
    return row["prep_state"] == S.COMPLETED and row["prep_result"] == "success"


def excludes_node(row: Mapping[str, Any], incarnation: int) -> bool:
    """A failed prep keeps the job off this node until it is reimaged."""
    return row["prep_state"] == S.COMPLETED and row["prep_result"] == "failure" and row["incarnation"] == incarnation


def ran_prep(row: Mapping[str, Any], incarnation: int) -> bool:
    """This incarnation of the node started prep at least once (a reboot may have reset it to pending since)."""
    return row["incarnation"] == incarnation and row["prep_attempt"] > 0


def needs_release(row: Mapping[str, Any], incarnation: int) -> bool:
    """Release runs where this incarnation of the node ran prep, and only once."""
    return ran_prep(row, incarnation) and row["release_state"] == S.PENDING


def reset_after_reboot(row: Mapping[str, Any], rerun_after_success: bool) -> bool:
    """Whether a reboot sends prep back to pending: always unless it succeeded and
    rerunOnNodeRebootAfterSuccess is off."""
    if row["prep_state"] == S.PENDING:
        return False
    return rerun_after_success or not succeeded(row)
