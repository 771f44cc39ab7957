"""adapter workflow states in columns of their own: evaluation, merged export and GGUF export
(state and error each, and the GGUF file's size) move out of the adapters' metrics JSON, which
then holds only measurements; existing values are carried over both ways

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

WORKFLOWS = ("evaluation", "merged_export", "gguf_export")
MOVED = [f"{key}_{part}" for key in WORKFLOWS for part in ("state", "error")] + ["gguf_export_bytes"]


def _adapters() -> sa.sql.TableClause:
    columns = [sa.column("id", sa.Integer), sa.column("metrics", sa.JSON), sa.column("gguf_export_bytes", sa.BigInteger)]
    columns += [sa.column(f"{key}_state", sa.String) for key in WORKFLOWS] + [sa.column(f"{key}_error", sa.Text) for key in WORKFLOWS]
    return sa.table("adapters", *columns)


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        for key in WORKFLOWS:
            batch_op.add_column(sa.Column(f"{key}_state", sa.String(length=20), nullable=True))
            batch_op.add_column(sa.Column(f"{key}_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("gguf_export_bytes", sa.BigInteger(), nullable=True))
    adapters = _adapters()
    bind = op.get_bind()
    for adapter_id, metrics in bind.execute(sa.select(adapters.c.id, adapters.c.metrics)).all():
        if not isinstance(metrics, dict) or not any(name in metrics for name in MOVED):
            continue
        values = {name: metrics.get(name) for name in MOVED}
        values["metrics"] = {k: v for k, v in metrics.items() if k not in MOVED}
        bind.execute(adapters.update().where(adapters.c.id == adapter_id).values(values))


def downgrade() -> None:
    adapters = _adapters()
    bind = op.get_bind()
    moved = [adapters.c[name] for name in MOVED]
    for row in bind.execute(sa.select(adapters.c.id, adapters.c.metrics, *moved)).mappings().all():
        metrics = dict(row["metrics"] or {})
        for key in WORKFLOWS:
            if row[f"{key}_state"] is not None:  # the JSON held a workflow's keys only once it was asked for
                metrics[f"{key}_state"], metrics[f"{key}_error"] = row[f"{key}_state"], row[f"{key}_error"]
        if row["gguf_export_bytes"] is not None:
            metrics["gguf_export_bytes"] = row["gguf_export_bytes"]
        if metrics != (row["metrics"] or {}):
            bind.execute(adapters.update().where(adapters.c.id == row["id"]).values(metrics=metrics))
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        for name in reversed(MOVED):
            batch_op.drop_column(name)
