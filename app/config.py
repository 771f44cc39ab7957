"""The one Settings class: every knob of Tailor, read from TAILOR_* environment variables."""

from __future__ import annotations

import hashlib
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.secret_key import MIN_KEY_LENGTH, load_or_create_secret_key


class Settings(BaseSettings):
    """Configuration for the web process, the workers and the CLI."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", extra="ignore")

    environment: str = Field(
        "development",
        description="'development' serves session cookies over plain HTTP; anything else (e.g. 'production') marks them HTTPS-only.",
    )
    data_dir: Path = Field(
        Path("var"),
        description="Folder for the SQLite database, uploaded datasets, adapters, base models and the embedded broker.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg2://tailor@db/tailor. Default: SQLite file DATA_DIR/tailor.db.",
    )
    redis_url: str | None = Field(
        None,
        description=(
            "Celery broker URL, e.g. redis://127.0.0.1:6379/0. Default: an embedded Redis on a unix socket in "
            "DATA_DIR started by `tailor up`."
        ),
    )
    secret_key: str | None = Field(
        None,
        description=(
            "Signs session cookies. Unset: a random key made on the first start and kept in DATA_DIR/secret_key "
            "(owner-only). Set it (32+ characters) when web processes on several machines must share one."
        ),
    )
    artifact_store_url: str | None = Field(
        None,
        description=(
            "Where datasets and adapters live: unset for DATA_DIR/artifacts, or s3://bucket/prefix for an "
            "S3-compatible bucket shared by web and workers on different machines (credentials from the usual AWS_* "
            "variables)."
        ),
    )
    s3_endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible server (MinIO, Ceph, …); unset for AWS.")
    max_upload_bytes: int = Field(1024**3, description="Largest dataset upload accepted, in bytes (default 1 GiB).")
    preview_rows: int = Field(10, description="Rows shown in a dataset's preview.")
    session_max_age_seconds: int = Field(14 * 24 * 3600, description="How long a browser sign-in lasts.")
    heartbeat_stale_seconds: int = Field(
        120,
        description="A running job whose worker has not written a heartbeat for this long is considered dead and re-queued.",
    )
    reconcile_interval_seconds: float = Field(
        60.0, description="How often the reconciler (run by `tailor worker --beat`) looks for lost or orphaned jobs."
    )
    reconcile_grace_seconds: int = Field(
        60,
        description="A queued job whose wake-up was sent longer ago than this (or never) is sent again by the reconciler.",
    )
    job_time_limit_seconds: int = Field(24 * 3600, description="Hard time limit of one training task on a worker.")
    auto_evaluate: bool = Field(
        True,
        description=(
            "Score each new adapter on its held-out rows right after training (answers next to the base model's, "
            "labels next to the majority class, loss and perplexity); bake-off jobs are always scored."
        ),
    )
    worker_queues: str = Field(
        "gpu,cpu,inference",
        description=(
            "Comma-separated Celery queues a `tailor worker` consumes: gpu (training, evaluation), cpu "
            "(housekeeping), inference (the playground)."
        ),
    )
    worker_health_port: int = Field(0, description="Port of a worker's GET /health endpoint for container probes (0 = none).")
    worker_health_host: str = Field("127.0.0.1", description="Address the worker's health endpoint binds to (0.0.0.0 inside a container).")
    log_format: str = Field("text", description="'text' (key=value lines) or 'json' (one JSON object per line); every line names its job.")
    admin_email: str = Field("admin@tailor.local", description="Email of the administrator created on the first `tailor up`.")
    host: str = Field("127.0.0.1", description="Address `tailor serve` binds to.")
    port: int = Field(8000, description="Port `tailor serve` listens on.")

    # --- throughput and estimates (issue 15) ---
    worker_calibration: bool = Field(
        True,
        description=(
            "At start a worker measures its own training speed (a few seconds of forward/backward on a small "
            "calibration model, cached per device in DATA_DIR/calibration) and reports it; estimates use it."
        ),
    )

    @model_validator(mode="after")
    def _refuse_short_secret(self) -> Settings:
        if self.secret_key == "":
            self.secret_key = None
        if self.secret_key is not None and len(self.secret_key) < MIN_KEY_LENGTH:
            raise ValueError(f"TAILOR_SECRET_KEY must be a random value of at least {MIN_KEY_LENGTH} characters.")
        return self

    def session_secret(self) -> str:
        """TAILOR_SECRET_KEY, or this install's own random key from DATA_DIR/secret_key (made on first use)."""
        return self.secret_key or load_or_create_secret_key(self.data_dir)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'tailor.db').resolve()}"

    @property
    def embedded_broker_socket(self) -> Path:
        path = (self.data_dir / "broker" / "redis.sock").resolve()
        if len(str(path)) > 100:  # unix socket paths are limited to ~107 bytes
            digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
            path = Path(tempfile.gettempdir()) / f"tailor-{digest}" / "redis.sock"
        return path

    @property
    def broker_url(self) -> str:
        return self.redis_url or f"redis+socket://{self.embedded_broker_socket}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


@lru_cache
def get_settings() -> Settings:
    return Settings()
