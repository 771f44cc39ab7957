"""a job's separately uploaded validation file: another dataset of the workspace

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("validation_dataset_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_validation_dataset_id"), ["validation_dataset_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_jobs_validation_dataset_id_datasets", "datasets", ["validation_dataset_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_jobs_validation_dataset_id_datasets", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_validation_dataset_id"))
        batch_op.drop_column("validation_dataset_id")
