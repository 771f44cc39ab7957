"""serving: API token scopes (existing tokens get both), expiry and revocation; adapters' model
names (slugs, backfilled) and request-log settings; the usage and request-log tables

Revision ID: 0012
Revises: 0009
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def _slug(name: str, adapter_id: int) -> str:
    """As app.services.model_names.adapter_slug, frozen here: a migration never changes with the code."""
    words = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")[:80].rstrip("-")
    return f"{words or 'adapter'}-{adapter_id}"


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scopes", sa.String(length=100), server_default="serve manage", nullable=False))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slug", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("request_log_enabled", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("request_log_retention_days", sa.Integer(), server_default="30", nullable=False))
    adapters = sa.table("adapters", sa.column("id", sa.Integer), sa.column("name", sa.String), sa.column("slug", sa.String))
    bind = op.get_bind()
    for adapter_id, name in bind.execute(sa.select(adapters.c.id, adapters.c.name)).all():
        bind.execute(adapters.update().where(adapters.c.id == adapter_id).values(slug=_slug(name, adapter_id)))
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_adapters_workspace_slug", ["workspace_id", "slug"])
    op.create_table(
        "serving_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("adapter_id", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("base_model", sa.String(length=300), nullable=False),
        sa.Column("endpoint", sa.String(length=40), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("first_token_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("serving_usage", schema=None) as batch_op:
        batch_op.create_index("ix_serving_usage_workspace_created", ["workspace_id", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_serving_usage_token_id"), ["token_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_serving_usage_adapter_id"), ["adapter_id"], unique=False)
    op.create_table(
        "serving_request_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("serving_request_log", schema=None) as batch_op:
        batch_op.create_index("ix_serving_request_log_adapter_created", ["adapter_id", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_serving_request_log_workspace_id"), ["workspace_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("serving_request_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_serving_request_log_workspace_id"))
        batch_op.drop_index("ix_serving_request_log_adapter_created")
    op.drop_table("serving_request_log")
    with op.batch_alter_table("serving_usage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_serving_usage_adapter_id"))
        batch_op.drop_index(batch_op.f("ix_serving_usage_token_id"))
        batch_op.drop_index("ix_serving_usage_workspace_created")
    op.drop_table("serving_usage")
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_constraint("uq_adapters_workspace_slug", type_="unique")
        batch_op.drop_column("request_log_retention_days")
        batch_op.drop_column("request_log_enabled")
        batch_op.drop_column("slug")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("scopes")
