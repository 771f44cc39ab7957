"""distributed training: a worker's devices, a job's device layout and its ranks' last reports

Revision ID: 0014
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("devices", sa.JSON(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("layout", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("ranks", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("ranks")
        batch_op.drop_column("layout")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("devices")
