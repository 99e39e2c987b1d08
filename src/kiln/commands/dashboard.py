"""What the dashboard shows (kiln.web): each page's rows in one read transaction, bounded whatever the job's size."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from kiln.commands import files, jobs, nodes
from kiln.commands.control import Control, Row
from kiln.core.node import NodeState, busy_state
from kiln.core.task import TaskState
from kiln.errors import KilnError
from kiln.store import dashboard as queries
from kiln.store import rows as db
from kiln.wire.times import now

#: The overview lists the latest jobs only.
OVERVIEW_JOBS = 50
#: How many bytes of a file a tail shows.
TAIL_BYTES = 8192
#: Where a node's start task writes its errors (Azure's layout).
START_TASK_STDERR = "startup/stderr.txt"


@dataclass(frozen=True, slots=True)
class NodeCell:
    """A node as the heat map shows it: its state as Batch reports it, and its slots in use."""

    row: Row
    state: str
    running_tasks: int
    running_slots: int

    @property
    def start_task_info(self) -> Row | None:
        return self.row.get("start_task_info")

    @property
    def start_task_failed(self) -> bool:
        info = self.start_task_info or {}
        return self.state == "starttaskfailed" or info.get("result") == "failure"


@dataclass(frozen=True, slots=True)
class StartTaskFailure:
    node: NodeCell
    stderr_tail: str


@dataclass(frozen=True, slots=True)
class PoolView:
    row: Row
    nodes: list[NodeCell]
    failures: list[StartTaskFailure] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobSummary:
    row: Row
    counts: dict[str, int]


def _cell(node: Row, running: tuple[int, int]) -> NodeCell:
    state = node["state"]
    if state in (NodeState.IDLE, NodeState.RUNNING):
        state = busy_state(running[0]).value
    return NodeCell(node, state, *running)


def _counts(conn: Connection, job_key: str) -> dict[str, int]:
    return _buckets(db.task_counts(conn, job_key))


def _buckets(groups: list[Row]) -> dict[str, int]:
    """Like GET taskcounts: preparing counts as running; succeeded and failed split completed."""
    counts = dict.fromkeys(jobs.COUNT_BUCKETS, 0)
    for group in groups:
        counts["running" if group["state"] == "preparing" else group["state"]] += group["n"]
        if group["state"] == "completed" and group["result"] in ("success", "failure"):
            counts["succeeded" if group["result"] == "success" else "failed"] += group["n"]
    return counts


async def overview(control: Control) -> tuple[list[PoolView], list[JobSummary]]:
    """Every pool with its nodes (and the tail of each failed start task), and the latest jobs with their counts."""

    def read(conn: Connection) -> tuple[list[PoolView], list[JobSummary]]:
        running = db.running_tasks_by_node(conn)
        views = []
        for pool in db.find(conn, db.pools, order_by=["key"]):
            rows = db.find(conn, db.nodes, order_by=["allocation_time", "id"], pool_key=pool["key"])
            views.append(PoolView(pool, [_cell(node, running.get(node["id"], (0, 0))) for node in rows]))
        latest = db.find(conn, db.jobs, order_by=["seq"])[-OVERVIEW_JOBS:][::-1]
        return views, [JobSummary(job, _counts(conn, job["key"])) for job in latest]

    views, summaries = await control.database.read(read)
    return [await _with_failures(control, view) for view in views], summaries


async def _with_failures(control: Control, view: PoolView) -> PoolView:
    failed = [cell for cell in view.nodes if cell.start_task_failed]
    failures = []
    for cell in failed:
        location = files.Location(cell.row["id"], "", f"pools/{view.row['id']}/nodes/{cell.row['id']}")
        failures.append(StartTaskFailure(cell, await tail(control, location, START_TASK_STDERR)))
    return PoolView(view.row, view.nodes, failures)


async def tail(control: Control, location: files.Location, path: str, limit: int = TAIL_BYTES) -> str:
    """The end of a file on its node; what went wrong, in words, when it cannot be read."""
    try:
        size = (await files.stat(control, location, path)).size
        data = await files.read(control, location, path, max(0, size - limit), None)
    except KilnError as error:
        return f"({path}: {error.message})"
    return data.decode("utf-8", "replace")


async def pool_view(control: Control, pool_id: str) -> PoolView:
    pool, listed = await nodes.list_all(control, pool_id)
    return await _with_failures(control, PoolView(pool, [_cell(node, running) for node, running, _recent in listed]))


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which of a job's tasks a page lists: state is a task state, or succeeded / failed (completed, by result)."""

    state: str | None = None
    exit_code: int | None = None
    after: int | None = None
    before: int | None = None

    def match(self, job_key: str) -> queries.TaskMatch:
        if self.state in ("succeeded", "failed"):
            result = "success" if self.state == "succeeded" else "failure"
            return queries.TaskMatch(job_key, (TaskState.COMPLETED,), result, self.exit_code)
        if self.state is not None:
            states: tuple[str, ...] = (self.state,)
        else:  # only a completed task has an exit code
            states = tuple(TaskState) if self.exit_code is None else (TaskState.COMPLETED,)
        return queries.TaskMatch(job_key, states, None, self.exit_code)


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[Row]
    matching: int
    earlier: int | None  #: the seq to page back from (None: this is the first page)
    later: int | None  #: the seq to page on from (None: this is the last page)


@dataclass(frozen=True, slots=True)
class JobView:
    row: Row
    counts: dict[str, int]
    exit_codes: list[tuple[int, int]]
    page: TaskPage
    preparations: list[Row]
    timeline: list[Row]
    timeline_until: datetime


def _page(conn: Connection, job_key: str, chosen: TaskFilter, size: int, groups: list[Row]) -> TaskPage:
    """A page of the chosen tasks, and how many there are: from the job's counts by state and result unless an
    exit code is chosen (counting the job's tasks again is the costliest read at 100,000 tasks)."""
    matching = chosen.match(job_key)
    fetched = queries.task_page(conn, matching, after=chosen.after, before=chosen.before, size=size)
    more = len(fetched) > size
    if chosen.before is not None:  # paging back: the extra row is the first
        rows = fetched[-size:]
        earlier, later = (rows[0]["seq"] if more else None), (rows[-1]["seq"] if rows else None)
    else:
        rows = fetched[:size]
        earlier = rows[0]["seq"] if chosen.after is not None and rows else None
        later = rows[-1]["seq"] if more else None
    if chosen.exit_code is None:
        total = sum(g["n"] for g in groups if g["state"] in matching.states and matching.result in (None, g["result"]))
    else:
        total = queries.count_tasks(conn, matching)
    return TaskPage(rows, total, earlier, later)


async def job_view(
    control: Control, job_id: str, chosen: TaskFilter, *, size: int, bars: int, until: datetime | None
) -> JobView:
    """The job, its counts, a page of its tasks, its prep/release records and the latest `bars` tasks started
    before `until` (now when None) for the timeline."""
    moment = until or now()

    def read(conn: Connection) -> JobView:
        job = jobs.load(conn, job_id)
        key = job["key"]
        records = db.find(conn, db.preparations, order_by=["node_id"], job_key=key)
        groups = db.task_counts(conn, key)
        return JobView(
            job,
            _buckets(groups),
            queries.exit_codes(conn, key),
            _page(conn, key, chosen, size, groups),
            [r for r in records if r["prep_state"] != "pending" or r["release_state"] != "pending"],
            queries.started_tasks(conn, key, moment, bars),
            moment,
        )

    return await control.database.read(read)


@dataclass(frozen=True, slots=True)
class NodeView:
    pool: Row
    cell: NodeCell
    tasks: list[Row]  #: each with its job's id as job_id
    preparations: list[Row]  #: this node's prep/release records, each with its job's id as job_id


async def node_view(control: Control, pool_id: str, node_id: str, *, recent: int) -> NodeView:
    def read(conn: Connection) -> NodeView:
        pool, node = nodes.load(conn, pool_id, node_id)
        running = db.running_tasks_by_node(conn).get(node["id"], (0, 0))
        listed = queries.node_tasks(conn, node["id"], recent)
        records = db.find(conn, db.preparations, order_by=["job_key"], node_id=node["id"])
        job_ids = _job_ids(conn, {r["job_key"] for r in listed + records})
        for row in listed + records:
            row["job_id"] = job_ids.get(row["job_key"], row["job_key"])
        return NodeView(pool, _cell(node, running), listed, records)

    return await control.database.read(read)


def _job_ids(conn: Connection, keys: set[str]) -> dict[str, str]:
    found = (db.get(conn, db.jobs, key=key) for key in keys)
    return {job["key"]: job["id"] for job in found if job is not None}


async def browse(control: Control, location: files.Location, path: str) -> list[files.FileEntry]:
    """The entries directly under a directory of a node's or a task's files."""
    return await files.list_files(control, files.below(location, path), recursive=False)
