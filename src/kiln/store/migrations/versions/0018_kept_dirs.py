"""kept_dirs: finished steps' directories kept until their retentionTime, one row each, filled from the stored
history (completed tasks, their multi-instance subtask nodes, finished preparation and release tasks) so that a
server no longer re-arms a timer per kept directory at start

Revision ID: 0018_kept_dirs
Revises: 0017_live_indexes
"""

from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

from kiln.core.task import kept_until, task_dir

revision = "0018_kept_dirs"
down_revision = "0017_live_indexes"
branch_labels = None
depends_on = None

PART = 5_000

jobs = sa.table("jobs", sa.column("key", sa.String), sa.column("id", sa.String), sa.column("spec", sa.JSON))
tasks = sa.table(
    "tasks",
    *(sa.column(name, sa.String) for name in ("job_key", "id", "node_id", "state")),
    sa.column("seq", sa.Integer),
    sa.column("end_time", sa.DateTime),
    sa.column("spec", sa.JSON),
)
subtasks = sa.table(
    "subtasks",
    sa.column("job_key", sa.String),
    sa.column("task_seq", sa.Integer),
    sa.column("id", sa.Integer),
    sa.column("node_id", sa.String),
)
preparations = sa.table(
    "preparations",
    *(sa.column(name, sa.String) for name in ("job_key", "node_id", "prep_state", "release_state")),
    sa.column("prep_end_time", sa.DateTime),
    sa.column("release_end_time", sa.DateTime),
)


def upgrade() -> None:
    kept_dirs = op.create_table(
        "kept_dirs",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("job_key", sa.String(length=100), nullable=False),
        sa.Column("due", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "path"),
    )
    op.create_index("ix_kept_dirs_due", "kept_dirs", ["due"])
    op.create_index("ix_kept_dirs_job_path", "kept_dirs", ["job_key", "path"])
    conn = op.get_bind()
    found: dict[tuple[str, str], dict] = {}
    for row in _history(conn):
        found[(row["node_id"], row["path"])] = row
        if len(found) >= PART:
            conn.execute(sa.insert(kept_dirs), list(found.values()))
            found.clear()
    if found:
        conn.execute(sa.insert(kept_dirs), list(found.values()))


def _history(conn: sa.Connection) -> Iterator[dict]:
    """Every directory a finished step left on a node, with its due time, as the server kept them in timers."""
    for job_key, job_id, spec in conn.execute(sa.select(jobs.c.key, jobs.c.id, jobs.c.spec)).all():
        query = sa.select(tasks.c.seq, tasks.c.id, tasks.c.node_id, tasks.c.end_time, tasks.c.spec).where(
            tasks.c.job_key == job_key, tasks.c.state == "completed", tasks.c.node_id.is_not(None)
        )
        instances: dict[int, list[str]] = {}
        nodes = sa.select(subtasks.c.task_seq, subtasks.c.node_id).where(
            subtasks.c.job_key == job_key, subtasks.c.id > 0
        )
        for seq, subtask_node in conn.execute(nodes):
            instances.setdefault(seq, []).append(subtask_node)
        for seq, task_id, node_id, ended, task_spec in conn.execute(query):
            due = kept_until(ended, (task_spec.get("constraints") or {}).get("retentionTime"))
            if due is not None:
                for on in (node_id, *instances.get(seq, ())):
                    yield {"node_id": on, "path": task_dir(job_id, task_id), "job_key": job_key, "due": due}
        for kind, key in (("prep", "jobPreparationTask"), ("release", "jobReleaseTask")):
            step = spec.get(key)
            if not step:
                continue
            retention = (
                (step.get("constraints") or {}).get("retentionTime") if kind == "prep" else step.get("retentionTime")
            )
            state, end = getattr(preparations.c, f"{kind}_state"), getattr(preparations.c, f"{kind}_end_time")
            records = sa.select(preparations.c.node_id, end).where(
                preparations.c.job_key == job_key, state == "completed"
            )
            for node_id, ended in conn.execute(records):
                due = kept_until(ended, retention)
                if due is not None:
                    yield {"node_id": node_id, "path": task_dir(job_id, step["id"]), "job_key": job_key, "due": due}


def downgrade() -> None:
    op.drop_table("kept_dirs")
