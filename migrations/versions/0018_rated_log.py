"""rated request log: a reviewer's thumbs up or down on a served answer (who and when), for
feedback datasets

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("serving_request_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rating", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("rated_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key("fk_serving_request_log_rated_by_id", "users", ["rated_by_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("serving_request_log", schema=None) as batch_op:
        batch_op.drop_constraint("fk_serving_request_log_rated_by_id", type_="foreignkey")
        batch_op.drop_column("rated_at")
        batch_op.drop_column("rated_by_id")
        batch_op.drop_column("rating")
