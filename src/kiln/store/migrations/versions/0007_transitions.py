"""transitions: every transition with its stimulus (a task's story)

Revision ID: 0007_transitions
Revises: 0006_multi_instance
"""

import sqlalchemy as sa
from alembic import op

import kiln.store.schema

revision = "0007_transitions"
down_revision = "0006_multi_instance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("job_key", sa.String(length=100), nullable=True),
        sa.Column("task_seq", sa.Integer(), nullable=True),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("from_state", sa.String(length=24), nullable=True),
        sa.Column("to_state", sa.String(length=24), nullable=False),
        sa.Column("stimulus", sa.String(length=256), nullable=False),
        sa.Column("detail", sa.String(length=256), nullable=True),
        sa.Column("at", kiln.store.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("transitions", schema=None) as batch_op:
        batch_op.create_index("ix_transitions_task", ["task_seq", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_transitions_task")
    op.drop_table("transitions")
