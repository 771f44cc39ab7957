"""Migrations build the schema from empty, match the models, roll back to empty, and carry the
rows' data over where they move it."""

import json
import os
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import JSON, DateTime, Integer, String, column, create_engine, inspect, table, text

from app.migrate import downgrade_database, upgrade_database
from app.models import Base


def _round_trip(url: str):
    upgrade_database(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert {"users", "workspaces", "datasets", "jobs", "metric_points", "adapters", "api_tokens"} <= tables
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    downgrade_database(url, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    engine.dispose()


OLD_METRICS = {
    "validation_loss": 1.25,
    "evaluation": {"rows": 4},
    "evaluation_state": "done",
    "evaluation_error": None,
    "merged_export_state": "failed",
    "merged_export_error": "ValueError: no base model",
    "gguf_export_state": "done",
    "gguf_export_error": None,
    "gguf_export_bytes": 4096,
}


def _workflow_states_carried_over(url: str):
    """0009 moves the adapters' workflow states out of the metrics JSON into columns, and back."""
    upgrade_database(url, "0008")
    engine = create_engine(url)
    adapters = table(
        "adapters",
        column("id", Integer),
        column("workspace_id", Integer),
        column("name", String),
        column("technique", String),
        column("base_model", String),
        column("storage_key", String),
        column("size_bytes", Integer),
        column("trainable_parameters", Integer),
        column("metrics", JSON),
        column("status", String),
        column("created_at", DateTime),
    )
    row = {
        "workspace_id": 1,
        "technique": "lora",
        "base_model": "tiny-llama",
        "storage_key": "k",
        "size_bytes": 0,
        "trainable_parameters": 0,
        "status": "draft",
        "created_at": datetime.now(UTC),
    }
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO workspaces (id, name, created_at) VALUES (1, 'w', CURRENT_TIMESTAMP)"))
        conn.execute(
            adapters.insert(),
            [
                {**row, "id": 1, "name": "asked", "metrics": OLD_METRICS},
                {**row, "id": 2, "name": "never asked", "metrics": {"validation_loss": 2.5}},
            ],
        )
    upgrade_database(url, "head")
    with engine.connect() as conn:
        asked, never = conn.execute(text("SELECT * FROM adapters ORDER BY id")).mappings().all()
    assert (asked["evaluation_state"], asked["evaluation_error"]) == ("done", None)
    assert (asked["merged_export_state"], asked["merged_export_error"]) == ("failed", "ValueError: no base model")
    assert (asked["gguf_export_state"], asked["gguf_export_bytes"]) == ("done", 4096)
    assert _metrics(asked) == {"validation_loss": 1.25, "evaluation": {"rows": 4}}
    assert _metrics(never) == {"validation_loss": 2.5} and never["evaluation_state"] is None and never["gguf_export_state"] is None
    downgrade_database(url, "0008")
    with engine.connect() as conn:
        asked, never = conn.execute(text("SELECT * FROM adapters ORDER BY id")).mappings().all()
    assert _metrics(asked) == OLD_METRICS
    assert _metrics(never) == {"validation_loss": 2.5}
    engine.dispose()


def _metrics(row) -> dict:
    return json.loads(row["metrics"]) if isinstance(row["metrics"], str) else row["metrics"]


def test_sqlite_upgrade_from_empty_and_downgrade_back(tmp_path):
    _round_trip(f"sqlite:///{tmp_path / 'fresh.db'}")


def test_sqlite_workflow_states_move_to_columns_and_back(tmp_path):
    _workflow_states_carried_over(f"sqlite:///{tmp_path / 'states.db'}")


def _postgres_admin_url() -> str:
    return os.environ.get("TAILOR_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@contextmanager
def _fresh_postgres_database():
    admin = create_engine(_postgres_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        conn = admin.connect()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL reachable: {exc}")
    name = f"tailor_migrations_{uuid.uuid4().hex[:8]}"
    conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield _postgres_admin_url().rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        conn.close()
        admin.dispose()


def test_postgresql_upgrade_from_empty_and_downgrade_back():
    with _fresh_postgres_database() as url:
        _round_trip(url)


def test_postgresql_workflow_states_move_to_columns_and_back():
    with _fresh_postgres_database() as url:
        _workflow_states_carried_over(url)


def test_sqlite_existing_users_become_owners_of_their_workspace(tmp_path):
    """Roles (issue 16): the users already there own their workspace, and none is disabled."""
    url = f"sqlite:///{tmp_path / 'roles.db'}"
    upgrade_database(url, "0009")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO workspaces (id, name, created_at) VALUES (1, 'w', CURRENT_TIMESTAMP)"))
        conn.execute(
            text(
                "INSERT INTO users (id, email, password_hash, is_admin, workspace_id, created_at) "
                "VALUES (1, 'a@example.com', 'x', 0, 1, CURRENT_TIMESTAMP), (2, 'b@example.com', 'x', 1, 1, CURRENT_TIMESTAMP)"
            )
        )
    upgrade_database(url, "head")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT email, role, disabled_at FROM users ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("a@example.com", "owner", None), ("b@example.com", "owner", None)]
    downgrade_database(url, "0009")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM users")).scalar_one() == 2
    engine.dispose()
