"""indexes for lists that seek: tasks by result and by exit code (in seq order), jobs and schedules by seq,
a pool's nodes by id, a schedule's jobs by seq

Revision ID: 0015_list_indexes
Revises: 0014_statistics
"""

from alembic import op

revision = "0015_list_indexes"
down_revision = "0014_statistics"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_tasks_job_result": ("tasks", ["job_key", "result", "seq"]),
    "ix_tasks_job_exit": ("tasks", ["job_key", "exit_code", "seq"]),
    "ix_jobs_seq": ("jobs", ["seq"]),
    "ix_jobs_schedule_seq": ("jobs", ["schedule_key", "seq"]),
    "ix_job_schedules_seq": ("job_schedules", ["seq"]),
    "ix_nodes_pool_id": ("nodes", ["pool_key", "id"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
