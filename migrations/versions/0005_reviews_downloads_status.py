"""blind review items, adapter downloads, adapter status

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("left_target", sa.String(length=40), nullable=False),
        sa.Column("right_target", sa.String(length=40), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("left_answer", sa.Text(), nullable=False),
        sa.Column("right_answer", sa.Text(), nullable=False),
        sa.Column("choice", sa.String(length=10), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["reviewer_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_items_token"), ["token"], unique=True)
        batch_op.create_index(batch_op.f("ix_review_items_workspace_id"), ["workspace_id"], unique=False)
    op.create_table(
        "adapter_downloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("adapter_downloads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_adapter_downloads_adapter_id"), ["adapter_id"], unique=False)
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=20), server_default="draft", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_column("status")
    with op.batch_alter_table("adapter_downloads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adapter_downloads_adapter_id"))
    op.drop_table("adapter_downloads")
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_items_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_review_items_token"))
    op.drop_table("review_items")
