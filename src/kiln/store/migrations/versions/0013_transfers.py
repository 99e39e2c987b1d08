"""transfers: what each ended step of a job downloaded and uploaded (Kiln's transfer accounting)

Revision ID: 0013_transfers
Revises: 0012_task_page_indexes
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_transfers"
down_revision = "0012_task_page_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transfers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_key", sa.String(length=100), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("task_seq", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_transfers_job_key", "transfers", ["job_key"])


def downgrade() -> None:
    op.drop_index("ix_transfers_job_key", table_name="transfers")
    op.drop_table("transfers")
