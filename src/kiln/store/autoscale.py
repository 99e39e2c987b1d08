"""What autoscale samples from the store: the task counts of one pool's unfinished jobs."""

from __future__ import annotations

from sqlalchemy import Connection, case, func, select

from kiln.store.schema import jobs, tasks

#: A multi-instance task counts as many tasks as it has instances; any other task as one.
_INSTANCES = func.coalesce(tasks.c.spec["multiInstanceSettings"]["numberOfInstances"].as_integer(), 1)


def pool_task_counts(conn: Connection, pool_key: str) -> dict[str, int]:
    """active, running (preparing counts as running) and completed success/failure tasks of the pool's
    jobs that have not completed, each weighted by its instances."""
    state = case((tasks.c.state == "preparing", "running"), else_=tasks.c.state)
    query = (
        select(state.label("state"), tasks.c.result, func.sum(_INSTANCES))
        .select_from(tasks.join(jobs, jobs.c.key == tasks.c.job_key))
        .where(jobs.c.pool_key == pool_key, jobs.c.state != "completed")
        .group_by(state, tasks.c.result)
    )
    counts: dict[str, int] = {}
    for name, result, count in conn.execute(query):
        key = f"{name}:{result}" if name == "completed" else name
        counts[key] = counts.get(key, 0) + int(count or 0)
    return counts
