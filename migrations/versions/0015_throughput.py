"""throughput: each worker's calibrated speed, and every finished job's measured tokens/s and
peak memory per worker, base model and technique (estimates use the most specific one)

Revision ID: 0015
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("calibrated_flops", sa.Float(), nullable=True))
    op.create_table(
        "throughput_measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("worker_name", sa.String(length=200), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("base_model", sa.String(length=500), nullable=False),
        sa.Column("technique", sa.String(length=50), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("max_length", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=False),
        sa.Column("tokens_per_second", sa.Float(), nullable=False),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("throughput_measurements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_throughput_measurements_worker_name"), ["worker_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_throughput_measurements_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("throughput_measurements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_throughput_measurements_created_at"))
        batch_op.drop_index(batch_op.f("ix_throughput_measurements_worker_name"))
    op.drop_table("throughput_measurements")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("calibrated_flops")
