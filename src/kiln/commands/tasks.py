"""Tasks: add (one or a collection), read, list, update, delete, terminate, reactivate, subtasks."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

from kiln.commands import applications, jobs
from kiln.commands.control import Check, Control, Row
from kiln.core import dependencies as dependency_rules
from kiln.core import exit_conditions as exit_rules
from kiln.core import filters
from kiln.core import job as job_rules
from kiln.core import task as task_rules
from kiln.errors import Conflict, KilnError, NotFound
from kiln.store import rows as db
from kiln.store import seek, task_pages
from kiln.wire import ids
from kiln.wire.models import TaskAdd, TaskConstraints, materialize_constraints
from kiln.wire.times import now


def load(conn: Connection, job_id: str, task_id: str) -> tuple[Row, Row]:
    """The job and its task."""
    job = jobs.load(conn, job_id)
    task = db.get(conn, db.tasks, job_key=job["key"], key=ids.key(task_id))
    if task is None:
        raise NotFound("The specified task does not exist.", code="TaskNotFound")
    return job, task


async def get(control: Control, job_id: str, task_id: str) -> tuple[Row, Row]:
    return await control.database.read(lambda conn: load(conn, job_id, task_id))


async def list_page(
    control: Control,
    job_id: str,
    term: filters.Term | None,
    matches: Callable[[Row], bool],
    after_seq: int,
    count: int,
    columns: frozenset[str] | None = None,
) -> tuple[Row, seek.Page]:
    """The job and a page of its tasks after `after_seq`, in the order they were added, read by index where
    the filter allows; matches: the whole filter on a task row, for what the store's columns cannot tell;
    columns: those to read (None: all), where the filter needs no more."""

    def read(conn: Connection) -> tuple[Row, seek.Page]:
        job = jobs.load(conn, job_id)
        return job, task_pages.task_page(conn, job["key"], term, after_seq, count, matches, columns)

    return await control.database.read(read)


async def add(control: Control, job_id: str, specs: list[TaskAdd | KilnError]) -> tuple[Row, list[Row | KilnError]]:
    """Insert the tasks and hand them to the scheduler: the job, and for each spec its row or its error.

    In a job with dependencies the scheduler indexes them in the same transaction (on the store's one
    thread, where completions and deletions update the same graph), and queues only those free to run.
    """
    scheduler = control.scheduler
    specs = [applications.checked_task(control, spec) for spec in specs]
    await scheduler.dependencies_known(ids.key(job_id))

    def write(conn: Connection) -> tuple[Row, list[Row | KilnError]]:
        job, outcomes = _insert(conn, job_id, specs)
        if job["spec"].get("usesTaskDependencies"):
            scheduler.dependent_tasks_added(conn, job["key"], [o for o in outcomes if isinstance(o, dict)])
        return job, outcomes

    job, outcomes = await control.database.write(write)
    if job["spec"].get("usesTaskDependencies"):
        scheduler.wake()
    else:
        scheduler.tasks_added(job["key"], [(o["seq"], o["required_slots"]) for o in outcomes if isinstance(o, dict)])
    return job, outcomes


def _check_against_job(job: Row, spec: TaskAdd) -> None:
    for kind, code in (
        ("jobPreparationTask", "TaskIdSameAsJobPreparationTask"),
        ("jobReleaseTask", "TaskIdSameAsJobReleaseTask"),
    ):
        other = job["spec"].get(kind)
        if other and other["id"].lower() == spec.id.lower():
            raise Conflict(f"The task id is the same as the id of the job's {kind}.", code=code)
    dependency_rules.check_allowed(job["spec"], spec.depends_on.dump() if spec.depends_on is not None else None)
    exit_rules.check_allowed(job["spec"], spec.exit_conditions.dump() if spec.exit_conditions is not None else None)


def _insert(conn: Connection, job_id: str, specs: list[TaskAdd | KilnError]) -> tuple[Row, list[Row | KilnError]]:
    """Insert the valid tasks of one request; each gets a row or an error (add-collection is not transactional)."""
    job = jobs.load(conn, job_id)
    job_rules.check_open(job["state"])
    moment = now()
    retries = job["spec"]["constraints"]["maxTaskRetryCount"]
    outcomes: list[Row | KilnError] = []
    seen: set[str] = set()
    wanted = [ids.key(s.id) for s in specs if not isinstance(s, KilnError)]
    existing = db.task_seqs(conn, job["key"], wanted)
    for spec in specs:
        if isinstance(spec, KilnError):
            outcomes.append(spec)
            continue
        try:
            _check_against_job(job, spec)
            key = ids.key(spec.id)
            if key in existing or key in seen:
                raise Conflict("The specified task already exists.", code="TaskExists")
            seen.add(key)
            outcomes.append(task_rules.new_row(job["key"], spec.materialize(retries), now=moment, etag=db.new_etag()))
        except KilnError as error:
            outcomes.append(error)
    db.insert_tasks(conn, job["key"], [o for o in outcomes if isinstance(o, dict)], moment)
    return job, outcomes


async def update(control: Control, job_id: str, task_id: str, constraints: TaskConstraints | None, check: Check) -> Row:
    """Replace the task's constraints: what `constraints` leaves out takes its default (the job's retry count)."""
    scheduler = control.scheduler

    def write(conn: Connection) -> tuple[Row, Row]:
        job, row = load(conn, job_id, task_id)
        check(row)
        job_rules.check_open(job["state"])
        spec = dict(row["spec"])
        spec["constraints"] = materialize_constraints(constraints, job["spec"]["constraints"]["maxTaskRetryCount"])
        changes = {"spec": spec, "max_retries": spec["constraints"]["maxTaskRetryCount"], "last_modified": now()}
        db.change(conn, db.tasks, {"seq": row["seq"]}, changes, bump_etag=True)
        return job, db.reread(conn, db.tasks, seq=row["seq"])

    job, row = await control.database.write(write)
    scheduler.task_row_changed(row)
    await scheduler.task_updated(job, row)
    return row


async def _checked(control: Control, job_id: str, task_id: str, check: Check) -> tuple[Row, Row]:
    job, row = await get(control, job_id, task_id)
    check(row)
    return job, row


async def delete(control: Control, job_id: str, task_id: str, check: Check) -> None:
    job, row = await _checked(control, job_id, task_id, check)
    await control.scheduler.end_task(job["key"], row["key"], delete=True)


async def terminate(control: Control, job_id: str, task_id: str, check: Check) -> None:
    job, row = await _checked(control, job_id, task_id, check)
    await control.scheduler.end_task(job["key"], row["key"], delete=False)


async def reactivate(control: Control, job_id: str, task_id: str, check: Check) -> None:
    """The scheduler runs `check` on the row inside its transaction."""
    job, row = await get(control, job_id, task_id)
    await control.scheduler.reactivate_task(job["key"], row["key"], check)


async def subtasks(control: Control, job_id: str, task_id: str) -> tuple[Row, Row, list[Row]]:
    """The job, the task, and the subtasks (ids 1..n-1) of its current or last multi-instance run."""

    def read(conn: Connection) -> tuple[Row, Row, list[Row]]:
        job, task = load(conn, job_id, task_id)
        rows = db.find(conn, db.subtasks, order_by=["id"], task_seq=task["seq"])
        return job, task, [r for r in rows if r["id"] > 0]

    return await control.database.read(read)
