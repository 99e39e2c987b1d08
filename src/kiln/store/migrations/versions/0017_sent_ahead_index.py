"""a partial index of the tasks sent ahead: a restart counts their unseen runs without reading every task

Revision ID: 0017_sent_ahead_index
Revises: 0016_sent_ahead
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_sent_ahead_index"
down_revision = "0016_sent_ahead"
branch_labels = None
depends_on = None

SENT_AHEAD = sa.text("sent_ahead_at IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_tasks_sent_ahead", "tasks", ["sent_ahead_node"], sqlite_where=SENT_AHEAD, postgresql_where=SENT_AHEAD
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_sent_ahead", table_name="tasks")
