"""Migrations build the schema from empty, match the models, and roll back to empty."""

import os
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

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


def test_sqlite_upgrade_from_empty_and_downgrade_back(tmp_path):
    _round_trip(f"sqlite:///{tmp_path / 'fresh.db'}")


def _postgres_admin_url() -> str:
    return os.environ.get("TAILOR_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def test_postgresql_upgrade_from_empty_and_downgrade_back():
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
        _round_trip(_postgres_admin_url().rsplit("/", 1)[0] + f"/{name}")
    finally:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        conn.close()
        admin.dispose()
