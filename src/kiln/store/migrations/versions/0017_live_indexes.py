"""partial indexes of what a restart rebuilds from: the tasks sent ahead (their unseen runs are counted) and the
unfinished jobs, so that neither is found by reading every task or every job

Revision ID: 0017_live_indexes
Revises: 0016_sent_ahead
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_live_indexes"
down_revision = "0016_sent_ahead"
branch_labels = None
depends_on = None

#: name: (table, columns, the rows it holds)
INDEXES = {
    "ix_tasks_sent_ahead": ("tasks", ["sent_ahead_node"], sa.text("sent_ahead_at IS NOT NULL")),
    "ix_jobs_unfinished": ("jobs", ["seq"], sa.text("state <> 'completed'")),
}


def upgrade() -> None:
    for name, (table, columns, where) in INDEXES.items():
        op.create_index(name, table, columns, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, (table, _, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
