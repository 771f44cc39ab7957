"""Migration 0012: existing API tokens keep working with both scopes; existing adapters get their model names."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from app.migrate import downgrade_database, upgrade_database


def test_existing_tokens_get_both_scopes_and_adapters_their_names(tmp_path):
    url = f"sqlite:///{tmp_path / 'serving.db'}"
    upgrade_database(url, "0009")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO workspaces (id, name, created_at) VALUES (1, 'w', CURRENT_TIMESTAMP)"))
        conn.execute(
            text(
                "INSERT INTO users (id, email, password_hash, is_admin, workspace_id, created_at) "
                "VALUES (1, 'a@b.c', 'x', 0, 1, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text("INSERT INTO api_tokens (id, user_id, token_hash, name, created_at) VALUES (1, 1, 'h', 'cli', CURRENT_TIMESTAMP)")
        )
        for adapter_id, name in ((4, "northwind_support · LoRA"), (5, "¡¡¡")):
            conn.execute(
                text(
                    "INSERT INTO adapters (id, workspace_id, name, technique, base_model, storage_key, size_bytes, trainable_parameters,"
                    " metrics, status, created_at) "
                    "VALUES (:id, 1, :name, 'lora', 'tiny-llama', 'k', 0, 0, '{}', 'draft', CURRENT_TIMESTAMP)"
                ),
                {"id": adapter_id, "name": name},
            )
    upgrade_database(url, "0012")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT scopes, expires_at, revoked_at FROM api_tokens")).one() == ("serve manage", None, None)
        slugs = conn.execute(text("SELECT slug, request_log_enabled, request_log_retention_days FROM adapters ORDER BY id")).all()
    assert slugs == [("northwind-support-lora-4", 0, 30), ("adapter-5", 0, 30)]
    downgrade_database(url, "0009")
    with engine.connect() as conn:
        assert "scopes" not in [row[1] for row in conn.execute(text("PRAGMA table_info(api_tokens)"))]
    engine.dispose()
