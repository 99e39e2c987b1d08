"""nodes: the start task each node runs, its startTaskInfo, errors, and whether it is dedicated

Revision ID: 0010_node_start_task
Revises: 0009_node_lifetimes
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_node_start_task"
down_revision = "0009_node_lifetimes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("start_task", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("start_task_info", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("errors", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("is_dedicated", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("is_dedicated")
        batch_op.drop_column("errors")
        batch_op.drop_column("start_task_info")
        batch_op.drop_column("start_task")
