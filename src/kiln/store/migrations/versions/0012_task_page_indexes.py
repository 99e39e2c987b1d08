"""tasks: indexes that hand a job's tasks (all, or those in a state) over in seq order, for keyset pages

Revision ID: 0012_task_page_indexes
Revises: 0011_task_counts
"""

from alembic import op

revision = "0012_task_page_indexes"
down_revision = "0011_task_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_tasks_job_state", table_name="tasks")
    op.create_index("ix_tasks_job_state", "tasks", ["job_key", "state", "seq"])
    op.create_index("ix_tasks_job_seq", "tasks", ["job_key", "seq"])


def downgrade() -> None:
    op.drop_index("ix_tasks_job_seq", table_name="tasks")
    op.drop_index("ix_tasks_job_state", table_name="tasks")
    op.create_index("ix_tasks_job_state", "tasks", ["job_key", "state"])
