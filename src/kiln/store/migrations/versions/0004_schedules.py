"""job schedules; auto pools and schedules on jobs

Revision ID: 0004_schedules
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import kiln.store.schema

revision = "0004_schedules"
down_revision = "0003_dependencies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_schedules",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("previous_state", sa.String(length=16), nullable=True),
        sa.Column("state_transition_time", kiln.store.schema.UTCDateTime(), nullable=False),
        sa.Column("previous_state_transition_time", kiln.store.schema.UTCDateTime(), nullable=True),
        sa.Column("last_due", kiln.store.schema.UTCDateTime(), nullable=True),
        sa.Column("job_count", sa.Integer(), nullable=False),
        sa.Column("recent_job_id", sa.String(length=100), nullable=True),
        sa.Column("pool_id", sa.String(length=64), nullable=True),
        sa.Column("end_time", kiln.store.schema.UTCDateTime(), nullable=True),
        sa.Column("creation_time", kiln.store.schema.UTCDateTime(), nullable=False),
        sa.Column("last_modified", kiln.store.schema.UTCDateTime(), nullable=False),
        sa.Column("etag", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.add_column("jobs", sa.Column("pool_id", sa.String(length=64), nullable=True))
    op.add_column("jobs", sa.Column("schedule_key", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_jobs_schedule_key"), "jobs", ["schedule_key"], unique=False)
    _job_id_length(64, 100)  # a schedule's jobs are `<scheduleId>:job-<n>`: longer than 64


def _job_id_length(old: int, new: int) -> None:
    for table, columns in (("jobs", ("key", "id")), ("tasks", ("job_key",)), ("preparations", ("job_key",))):
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(
                    column, existing_type=sa.String(length=old), type_=sa.String(length=new), existing_nullable=False
                )


def downgrade() -> None:
    _job_id_length(100, 64)
    op.drop_index(op.f("ix_jobs_schedule_key"), table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("schedule_key")
        batch.drop_column("pool_id")
    op.drop_table("job_schedules")
