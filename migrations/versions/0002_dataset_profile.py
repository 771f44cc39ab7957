"""dataset profile, source format, sheet, ingest notes and the masked training copy flag

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_format", sa.String(length=10), nullable=False, server_default="csv"))
        batch_op.add_column(sa.Column("sheet_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("profile", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("ingest_notes", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("pii_masked", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("pii_masked")
        batch_op.drop_column("ingest_notes")
        batch_op.drop_column("profile")
        batch_op.drop_column("sheet_name")
        batch_op.drop_column("source_format")
