"""task_stats and usage_stats: what tasks' processes used, per task and summed per job, schedule, pool and account

Revision ID: 0014_statistics
Revises: 0012_task_page_indexes
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_statistics"
down_revision = "0013_transfers"
branch_labels = None
depends_on = None


def _usage() -> list[sa.Column]:
    return [
        sa.Column("user_cpu", sa.Float(), nullable=False),
        sa.Column("kernel_cpu", sa.Float(), nullable=False),
        sa.Column("wall_clock", sa.Float(), nullable=False),
        sa.Column("read_ops", sa.BigInteger(), nullable=False),
        sa.Column("write_ops", sa.BigInteger(), nullable=False),
        sa.Column("read_bytes", sa.BigInteger(), nullable=False),
        sa.Column("write_bytes", sa.BigInteger(), nullable=False),
        sa.Column("last_update_time", sa.DateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "task_stats",
        sa.Column("task_seq", sa.Integer(), nullable=False),
        sa.Column("job_key", sa.String(length=100), nullable=False),
        *_usage(),
        sa.PrimaryKeyConstraint("task_seq"),
    )
    op.create_index("ix_task_stats_job_key", "task_stats", ["job_key"])
    op.create_table(
        "usage_stats",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        *_usage(),
        sa.Column("wait", sa.Float(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("peak_rss", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )


def downgrade() -> None:
    op.drop_table("usage_stats")
    op.drop_index("ix_task_stats_job_key", table_name="task_stats")
    op.drop_table("task_stats")
