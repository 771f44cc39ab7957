"""metric points: validation loss, gradient norm and memory per step

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metric_points", schema=None) as batch_op:
        batch_op.add_column(sa.Column("validation_loss", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("grad_norm", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("memory_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metric_points", schema=None) as batch_op:
        batch_op.drop_column("memory_bytes")
        batch_op.drop_column("grad_norm")
        batch_op.drop_column("validation_loss")
