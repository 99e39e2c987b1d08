"""tasks sent ahead: where and when, so that a run a node started unseen before the server died is counted

Revision ID: 0016_sent_ahead
Revises: 0015_list_indexes
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_sent_ahead"
down_revision = "0015_list_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("sent_ahead_node", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("sent_ahead_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("sent_ahead_at")
        batch.drop_column("sent_ahead_node")
