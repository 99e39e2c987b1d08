"""The transitions table: written with each transaction's transitions, read for a task's story."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, insert, or_, select

from kiln import story
from kiln.store.prepared import Prepared
from kiln.store.schema import transitions

Row = dict[str, Any]

#: How many transitions a task keeps: its latest ones (a task that loops through retries and requeues
#: must not grow the store without bound).
STORY_LENGTH = 50

_COLUMNS = ("kind", "job_key", "task_seq", "node_id", "from_state", "to_state", "stimulus", "detail", "at")
_INSERT = Prepared(insert(transitions).values({c: bindparam(c) for c in _COLUMNS}))
_latest = (
    select(transitions.c.id)
    .where(transitions.c.task_seq == bindparam("seq"))
    .order_by(transitions.c.id.desc())
    .limit(1)
    .offset(STORY_LENGTH)
    .scalar_subquery()
)
#: a task's records older than its latest STORY_LENGTH
_PRUNE = delete(transitions).where(transitions.c.task_seq == bindparam("seq"), transitions.c.id <= _latest)


def record_transitions(conn: Connection, notes: list[story.Note]) -> None:
    """One statement for the transaction's transitions. Only a task that comes back to active (a retry, a
    requeue, a reactivation: the only way round its cycle) can outgrow STORY_LENGTH, so only such a task is
    cut back to it, in the same statement for all of them: a task holds at most STORY_LENGTH + 3 records."""
    records = story.records(notes)
    if not records:
        return
    _INSERT.execute_many(conn, records)
    looped = {
        r["task_seq"] for r in records if r["task_seq"] is not None and r["from_state"] and r["to_state"] == "active"
    }
    if looped:
        conn.execute(_PRUNE, [{"seq": seq} for seq in looped])


def task_story(conn: Connection, job_key: str, task_seq: int) -> list[Row]:
    """The task's transitions, its job's, and those of the prep/release records and nodes it ran on."""
    own = _rows(conn, select(transitions).where(transitions.c.task_seq == task_seq))
    nodes = {r["node_id"] for r in own if r["node_id"]}
    others = select(transitions).where(transitions.c.task_seq.is_(None))
    around = _rows(conn, others.where(transitions.c.job_key == job_key))
    if nodes and own:
        node_rows = others.where(
            transitions.c.kind == "node", transitions.c.node_id.in_(nodes), transitions.c.at >= own[0]["at"]
        )
        around += _rows(conn, node_rows)
    shown = [r for r in around if r["kind"] == "job" or r["node_id"] in nodes]
    return sorted(own + shown, key=lambda r: r["id"])


def _rows(conn: Connection, query: Any) -> list[Row]:
    return [dict(r) for r in conn.execute(query.order_by(transitions.c.id)).mappings()]


def node_story(conn: Connection, node_id: str) -> list[Row]:
    """The node's own transitions and the faults on demand that hit it outside any job (its start task), oldest
    first (what Kiln's service logs of a node hold)."""
    return _rows(conn, select(transitions).where(node_own(node_id)))


def node_own(node_id: str) -> Any:
    """The condition of a node's own records (found through the task index's NULL part)."""
    return and_(
        transitions.c.task_seq.is_(None),
        transitions.c.node_id == node_id,
        or_(transitions.c.kind == "node", and_(transitions.c.kind == "fault", transitions.c.job_key.is_(None))),
    )
