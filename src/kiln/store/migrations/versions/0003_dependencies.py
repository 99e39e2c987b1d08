"""task dependencies: the dependency action each completed task decided

Revision ID: 0003_dependencies
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_dependencies"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("dependency_action", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("dependency_action")
