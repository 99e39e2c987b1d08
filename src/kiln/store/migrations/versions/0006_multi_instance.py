"""multi-instance tasks: subtask rows

Revision ID: 0006_multi_instance
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import kiln.store.schema

revision = "0006_multi_instance"
down_revision = "0004_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subtasks",
        sa.Column("task_seq", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_key", sa.String(length=100), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_transition_time", kiln.store.schema.UTCDateTime(), nullable=False),
        sa.Column("previous_state", sa.String(length=16), nullable=True),
        sa.Column("previous_state_transition_time", kiln.store.schema.UTCDateTime(), nullable=True),
        sa.Column("start_time", kiln.store.schema.UTCDateTime(), nullable=True),
        sa.Column("end_time", kiln.store.schema.UTCDateTime(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("failure_info", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("task_seq", "id"),
    )
    with op.batch_alter_table("subtasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subtasks_job_key"), ["job_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("subtasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subtasks_job_key"))
    op.drop_table("subtasks")
