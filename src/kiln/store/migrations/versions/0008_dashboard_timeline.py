"""the dashboard's timeline: a job's tasks by start time

Revision ID: 0008_dashboard_timeline
Revises: 0007_transitions
"""

from alembic import op

revision = "0008_dashboard_timeline"
down_revision = "0007_transitions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_job_start", "tasks", ["job_key", "start_time"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tasks_job_start", table_name="tasks")
