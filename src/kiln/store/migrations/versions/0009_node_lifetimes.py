"""node_lifetimes: nodes that left their pools, for listPoolUsageMetrics

Revision ID: 0009_node_lifetimes
Revises: 0008_dashboard_timeline
"""

import sqlalchemy as sa
from alembic import op

import kiln.store.schema

revision = "0009_node_lifetimes"
down_revision = "0008_dashboard_timeline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_lifetimes",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("pool_id", sa.String(length=64), nullable=False),
        sa.Column("vm_size", sa.Text(), nullable=False),
        sa.Column("start_time", kiln.store.schema.UTCDateTime(), nullable=False),
        sa.Column("end_time", kiln.store.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )


def downgrade() -> None:
    op.drop_table("node_lifetimes")
