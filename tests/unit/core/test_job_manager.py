"""The task a job's jobManagerTask becomes (core/job.py), for jobs from the API and from schedules."""

from __future__ import annotations

from typing import Any

from kiln.core.job import manager_task_doc
from kiln.wire.models import JobAdd, TaskAdd


def job_spec(**fields: Any) -> dict[str, Any]:
    """A job's stored spec (a schedule stores its jobSpecification the same way)."""
    return JobAdd.model_validate({"id": "j", "poolInfo": {"poolId": "p"}, **fields}).materialize()


def test_a_job_without_a_manager_has_no_manager_task() -> None:
    assert manager_task_doc(job_spec()) is None


def test_the_manager_becomes_the_task_its_fields_make_without_its_job_level_fields() -> None:
    fields = {
        "id": "manager",
        "commandLine": "run",
        "requiredSlots": 2,
        "environmentSettings": [{"name": "A", "value": "1"}],
        "constraints": {"maxWallClockTime": "PT1H"},
        "authenticationTokenSettings": {"access": ["job"]},
    }
    spec = job_spec(
        jobManagerTask={**fields, "killJobOnCompletion": False, "runExclusive": False},
        constraints={"maxTaskRetryCount": 4},
    )
    doc = manager_task_doc(spec)
    assert doc == TaskAdd.model_validate(fields).materialize(4)  # as if added as a task of the job
    assert not {"killJobOnCompletion", "runExclusive", "allowLowPriorityNode"} & set(doc)
    assert doc["constraints"]["maxTaskRetryCount"] == 4  # the job's retry count, unless the manager sets one


def test_the_manager_keeps_its_own_retry_count() -> None:
    spec = job_spec(
        jobManagerTask={"id": "m", "commandLine": "x", "constraints": {"maxTaskRetryCount": 1}},
        constraints={"maxTaskRetryCount": 4},
    )
    assert manager_task_doc(spec)["constraints"]["maxTaskRetryCount"] == 1
