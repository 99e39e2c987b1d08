"""task_counts: counter rows for taskcounts and taskslotcounts, filled from the existing tasks

Revision ID: 0011_task_counts
Revises: 0010_node_start_task
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_task_counts"
down_revision = "0010_node_start_task"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_counts",
        sa.Column("job_key", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job_key", "state", "result"),
    )
    op.execute(
        "INSERT INTO task_counts (job_key, state, result, tasks, slots)"
        " SELECT job_key, state, COALESCE(result, ''), COUNT(*), SUM(required_slots)"
        " FROM tasks GROUP BY job_key, state, COALESCE(result, '')"
    )


def downgrade() -> None:
    op.drop_table("task_counts")
