"""Why a task is where it is, in words: read from the scheduler's memory, changing nothing.

The checks follow placement's own order (scheduler/priority.py, JobManagement._turn): the job's state, its
dependencies, its job manager task, maxParallelTasks, the pool and its nodes, then slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from kiln.core import preparation as prep_rules
from kiln.core.job import JobState
from kiln.core.pool import PoolState
from kiln.core.task import TaskState
from kiln.scheduler.slots import NodeSlots
from kiln.scheduler.state import JobEntry, StepRef
from kiln.wire import ids

Row = Mapping[str, Any]


class Memory(Protocol):
    """What of the Scheduler this reads."""

    nodes: dict[str, NodeSlots]
    pools: dict[str, dict[str, Any]]
    jobs: dict[str, JobEntry]
    preps: dict[tuple[str, str], dict[str, Any]]
    waiting: dict[tuple[str, str], list[int]]
    steps: dict[str, StepRef]


#: How many parent ids a dependency answer looks at (a range may name millions).
MAX_PARENTS = 100


def parent_ids(task: Row) -> list[str]:
    """The ids a task depends on (its first MAX_PARENTS): the caller reads their rows for `why`."""
    depends_on = task["spec"].get("dependsOn") or {}
    found = list(depends_on.get("taskIds") or [])
    for span in depends_on.get("taskIdRanges") or []:
        found += [str(n) for n in range(span["start"], min(span["end"], span["start"] + MAX_PARENTS) + 1)]
    return found[:MAX_PARENTS]


def why(memory: Memory, job: Row, task: Row, parents: Mapping[str, Row] | None = None) -> str:
    """parents: rows (state, dependency_action) of the task's parent_ids that exist, by task key."""
    state = task["state"]
    if state == TaskState.COMPLETED:
        return _completed(task)
    if state == TaskState.RUNNING:
        return f"running on node {task['node_id']}"
    if state == TaskState.PREPARING:
        return _preparing(memory, job, task)
    entry = memory.jobs.get(job["key"])
    if job["state"] != JobState.ACTIVE or entry is None:
        return f"waiting: job is {job['state']}"
    return (
        _dependencies(entry, task, parents or {})
        or _manager(entry, task)
        or _parallel(memory, entry)
        or _sent_ahead(memory, task)
        or _too_big(memory, entry, task)
        or _nodes(memory, entry, task)
    )


def _completed(task: Row) -> str:
    failure = task.get("failure_info")
    code = "" if task.get("exit_code") is None else f"exit code {task['exit_code']}"
    if not failure:
        return f"completed: {code or 'succeeded'}"
    said = f"failure: {failure.get('code')}: {failure.get('message')}"
    return f"completed: {code} ({said})" if code else f"completed ({said})"


def _preparing(memory: Memory, job: Row, task: Row) -> str:
    node_id = task["node_id"]
    record = memory.preps.get((job["key"], node_id))
    prep = record["prep_state"] if record is not None else "pending"
    return f"waiting: preparation task {prep} on node {node_id}"


def _dependencies(entry: JobEntry, task: Row, parents: Mapping[str, Row]) -> str | None:
    if entry.graph is None or not entry.graph.waiting(task["seq"]):
        return None
    named = parent_ids(task)
    rows = {p: parents.get(ids.key(p)) for p in named}
    blocked = [
        p
        for p, r in rows.items()
        if r is not None and r["state"] == TaskState.COMPLETED and r["dependency_action"] == "block"
    ]
    if blocked:
        return f"blocked: parent {', '.join(blocked)} completed with dependencyAction block"
    missing = [p for p, r in rows.items() if r is None]
    if missing and len(missing) == len(named):
        return f"waiting: parent tasks {', '.join(missing[:10])} do not exist yet"
    unmet = [p for p, r in rows.items() if r is not None and r["state"] != TaskState.COMPLETED]
    return f"waiting for parent tasks to complete: {', '.join(unmet[:10] or missing[:10])}"


def _manager(entry: JobEntry, task: Row) -> str | None:
    manager = entry.manager_seq
    if manager is None or manager < 0 or manager == task["seq"] or manager not in entry.queue.queued:
        return None
    return f"waiting for the job manager task ({entry.spec['jobManagerTask']['id']}) to start"


def _parallel(memory: Memory, entry: JobEntry) -> str | None:
    limit = entry.spec.get("maxParallelTasks", -1)
    if limit == -1:
        return None
    on_nodes = sum(1 for ref in memory.steps.values() if ref.kind == "task" and ref.job_key == entry.key)
    on_nodes += sum(len(seqs) for (job_key, _), seqs in memory.waiting.items() if job_key == entry.key)
    return f"waiting: maxParallelTasks {limit} reached" if on_nodes >= limit else None


def _too_big(memory: Memory, entry: JobEntry, task: Row) -> str | None:
    """More slots than any node of the pool has: it never starts (a node sent it ahead or not)."""
    capacities = {n.capacity for n in memory.nodes.values() if n.pool_key == entry.row["pool_key"]}
    needs = task["required_slots"]
    if not capacities or max(capacities) >= needs:
        return None
    return f"waiting: needs {needs} slots; the pool's nodes have {max(capacities)} slots each"


def _sent_ahead(memory: Memory, task: Row) -> str | None:
    for node in memory.nodes.values():
        if any(seq == task["seq"] for _, seq, _ in node.ahead.values()):
            return f"sent ahead to node {node.node_id}: starts when a slot there frees"
    return None


def _nodes(memory: Memory, entry: JobEntry, task: Row) -> str:
    pool = memory.pools.get(entry.row["pool_key"])
    if pool is None or pool["state"] != PoolState.ACTIVE:
        return "waiting: the job's pool does not exist" if pool is None else f"waiting: the pool is {pool['state']}"
    nodes = sorted((n for n in memory.nodes.values() if n.pool_key == pool["key"]), key=lambda n: n.node_id)
    if not nodes:
        return "waiting: the pool has no nodes"
    excluded = [_prep_failed(memory, entry, node) for node in nodes]
    said = [reason for reason in excluded if reason is not None]
    usable = [n for n, reason in zip(nodes, excluded) if reason is None and n.up and not n.draining and not n.exclusive]
    if not usable:
        return "waiting: " + "; ".join(said if len(said) == len(nodes) else ["the pool has no idle nodes", *said])
    best = max(usable, key=lambda n: (n.free, n.node_id))
    needs = task["required_slots"]
    if best.free == 0:
        first = "every slot of the pool's nodes is in use"
    elif best.free < needs:
        first = f"needs {needs} slots; node {best.node_id} has {best.free} free"
    else:
        first = "queued for the next placement round"
    return "waiting: " + "; ".join([first, *said])


def _prep_failed(memory: Memory, entry: JobEntry, node: NodeSlots) -> str | None:
    """Why the job's tasks may not start on this node until it is reimaged; None if they may."""
    record = memory.preps.get((entry.key, node.node_id))
    if record is None or not prep_rules.excludes_node(record, node.incarnation):
        return None
    exit_code = record.get("prep_exit_code")
    because = f"exit {exit_code}" if exit_code is not None else (record.get("prep_failure_info") or {}).get("code")
    return f"node {node.node_id} is excluded for this job since its preparation task failed ({because})"
