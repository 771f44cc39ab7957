"""The one Settings class: every knob of Tailor, read from TAILOR_* environment variables."""

from __future__ import annotations

import hashlib
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
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
    # --- serving engine (`tailor engine`, worker/serving) ---
    serve_max_batch: int = Field(32, ge=1, le=1024, description="Most requests one serving engine decodes together in its running batch.")
    serve_max_adapters: int = Field(
        16, ge=1, le=10_000, description="Most adapters a serving engine keeps loaded beside its base model (least recently used evicted)."
    )
    serve_adapter_memory_mb: int = Field(
        1024, ge=1, description="Memory budget in MB for the adapters a serving engine keeps loaded (least recently used evicted)."
    )
    serve_stop_grace_seconds: float = Field(
        15.0, ge=0, description="On SIGTERM, how long a serving engine keeps decoding its running requests before failing them with a 503."
    )

    # --- serving (the OpenAI-compatible /v1 endpoint) ---
    serving_backend: str = Field(
        "builtin",
        description=(
            "What answers /v1 requests: 'builtin' (Tailor's engine, `tailor engine`, over Redis) or 'vllm' (a vLLM "
            "OpenAI server with LoRA enabled at TAILOR_VLLM_URL; Tailor registers approved adapters with it)."
        ),
    )
    vllm_url: str = Field("http://127.0.0.1:8001", description="Base URL of the vLLM OpenAI server when TAILOR_SERVING_BACKEND=vllm.")
    serve_public_url: str | None = Field(
        None,
        description=(
            "The endpoint's base URL shown in the adapter's Use it panel and model card (e.g. https://tailor.example.com/v1); "
            "unset: this request's host."
        ),
    )
    serve_requests_per_minute: int = Field(
        60, description="Requests one API token may make to /v1 per minute (moving window); 0 = no limit."
    )
    serve_tokens_per_minute: int = Field(
        20000, description="Prompt plus completion tokens one API token may use on /v1 per minute (moving window); 0 = no limit."
    )
    serve_max_tokens: int = Field(
        1024, description="The largest max_tokens a /v1 request may ask for (also the default when it asks for none)."
    )
    serve_max_streams_per_token: int = Field(8, description="Streaming /v1 answers one API token may hold open at once.")
    serve_start_timeout_seconds: float = Field(
        30.0, description="How long a /v1 request waits for the engine to start answering before it gets a 503."
    )
    serve_idle_timeout_seconds: float = Field(
        30.0, description="How long a running answer may go without a new token before it ends with an error (a stalled engine)."
    )

    # --- roles, invites and the audit log (issue 16) ---
    invite_ttl_hours: float = Field(72.0, gt=0, description="How long an invite link can be used (it also works only once).")
    audit_page_size: int = Field(50, ge=1, le=1000, description="Audit events per page on the audit log page and in the API.")
    smtp_host: str | None = Field(
        None, description="SMTP server that sends invite emails; unset: no mail is sent and the owner copies the link from the page."
    )
    smtp_port: int = Field(587, description="Port of the SMTP server.")
    smtp_username: str | None = Field(None, description="SMTP user name (unset: no SMTP authentication).")
    smtp_password: str | None = Field(None, description="SMTP password.")
    smtp_from: str = Field("tailor@localhost", description="The From address of invite emails.")
    smtp_starttls: bool = Field(True, description="Upgrade the SMTP connection with STARTTLS before sending (off for a local relay).")
    smtp_timeout_seconds: float = Field(10.0, gt=0, description="Give up on the SMTP server after this many seconds.")

    # --- sign-in, sessions and request limits (issue 16) ---
    max_body_bytes: int = Field(
        1024 * 1024,
        description=(
            "Largest request body accepted on every route that is not an upload (default 1 MiB); a larger one is "
            "refused with 413 before sign-in is checked or the body is read. Uploads keep TAILOR_MAX_UPLOAD_BYTES."
        ),
    )
    sign_in_account_limits: str = Field(
        "5/minute;20/hour;100/day",
        description=(
            "Failed sign-ins allowed per account (email) before further attempts are refused with 429, as "
            "`limits` rate strings separated by ';': each window that fills locks the account for longer (backoff). "
            "A successful sign-in clears the account's count."
        ),
    )
    sign_in_address_limits: str = Field(
        "30/minute;300/hour;1000/day",
        description="Failed sign-ins allowed per client address (any account), as `limits` rate strings separated by ';'.",
    )
    password_hash_time_cost: int = Field(3, ge=1, le=100, description="Argon2id passes over memory per password hash.")
    password_hash_memory_kib: int = Field(
        65536, ge=8192, le=4 * 1024 * 1024, description="Argon2id memory per password hash, in KiB (default 64 MiB)."
    )
    password_hash_parallelism: int = Field(4, ge=1, le=64, description="Argon2id lanes (threads) per password hash.")
    oidc_issuer: str | None = Field(
        None,
        description=(
            "OpenID Connect issuer URL (its /.well-known/openid-configuration is read), e.g. "
            "https://login.example.com/realms/acme. Set with the client id and secret to offer 'Sign in with SSO'."
        ),
    )
    oidc_client_id: str | None = Field(None, description="Client id of Tailor at the OpenID Connect provider.")
    oidc_client_secret: str | None = Field(None, description="Client secret of Tailor at the OpenID Connect provider.")
    oidc_allowed_domains: str = Field(
        "",
        description=(
            "Comma-separated email domains whose people may sign in with SSO (e.g. 'acme.com,acme.de'); "
            "empty = nobody is created or signed in by SSO."
        ),
    )
    oidc_default_role: str = Field(
        "member",
        description="Role given to a person created by their first SSO sign-in (owner, member or viewer) in the workspace they join.",
    )
    oidc_provider_logout: bool = Field(
        True,
        description=(
            "Signing out of a session begun by SSO also signs out at the provider (RP-initiated logout), "
            "when its discovery document names an end_session_endpoint; the provider then sends the browser back to /login."
        ),
    )

    @field_validator("oidc_default_role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        from app.domain.roles import ROLES

        if value not in ROLES:
            raise ValueError(f"TAILOR_OIDC_DEFAULT_ROLE must be one of {', '.join(ROLES)}.")
        return value

    @field_validator("sign_in_account_limits", "sign_in_address_limits")
    @classmethod
    def _valid_rate_limits(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value.replace(";", ",")) if value.strip() else None
        except ValueError:
            raise ValueError(f"{value!r} is not a list of rates such as '5/minute;20/hour'.") from None
        return value

    # --- input limits: spreadsheets (zip bombs) and playground event streams ---
    xlsx_max_parts: int = Field(10_000, description="An .xlsx workbook with more parts (ZIP entries) than this is refused unopened.")
    xlsx_max_part_bytes: int = Field(
        256 * 1024**2, description="Largest unpacked size of one part of an .xlsx workbook (a sheet, the shared strings), in bytes."
    )
    xlsx_max_unpacked_bytes: int = Field(1024**3, description="Largest unpacked size of all parts of an .xlsx workbook together, in bytes.")
    xlsx_max_compression_ratio: float = Field(
        100.0,
        description="A part of an .xlsx workbook (of 1 MiB or more unpacked) packed more tightly than this is refused as a zip bomb.",
    )
    xlsx_max_rows: int = Field(1_048_576, description="Most rows read from one sheet of a workbook (Excel's own limit by default).")
    xlsx_max_text_bytes: int = Field(
        1024**3, description="Most text (as CSV bytes: cells, commas, line breaks) read from one sheet of a workbook."
    )
    playground_max_streams_per_user: int = Field(
        8, description="Playground event streams one user may hold open at once; beyond it a new stream is refused with 429."
    )
    stream_lease_seconds: float = Field(
        30.0,
        ge=1,
        description="An open stream (playground or /v1) renews its slot's lease while it runs; a stream whose web process died "
        "stops counting against its cap after this many seconds.",
    )

    # --- distributed training (issue 13): one job over several devices and machines ---
    worker_devices: str = Field(
        "", description="GPUs a worker offers, e.g. '0,1,2,3' (`tailor worker --devices`); empty = every visible GPU, or the CPU."
    )
    distributed_timeout_seconds: float = Field(
        300.0, description="Every collective of a job's process group gives up after this, so a dead rank never hangs the others."
    )
    ray_address: str = Field(
        "", description="Address of a Ray cluster (HEAD:6379) that runs multi-machine jobs; empty = single-machine jobs only."
    )
    ray_max_failures: int = Field(2, description="How often Ray Train restarts a multi-machine job's processes from the last checkpoint.")
    ray_storage_path: str = Field(
        "", description="Storage every Ray node reaches (shared folder or s3://…) for Ray Train's checkpoints; empty = DATA_DIR/ray."
    )

    # --- quotas and fair dispatch (issue 16): defaults for every workspace; an administrator overrides them per
    # workspace at /admin/quotas. 0 = unlimited.
    quota_max_queued_jobs: int = Field(
        0, ge=0, description="Most jobs a workspace may have waiting in the queue; a new job beyond it is refused (0 = unlimited)."
    )
    quota_max_running_jobs: int = Field(
        0, ge=0, description="Most jobs of one workspace that run at once; the others wait in the queue (0 = unlimited)."
    )
    quota_gpu_hours_per_month: float = Field(
        0.0,
        ge=0,
        description=(
            "Worker hours a workspace's training jobs may use per calendar month (UTC), summed over their attempts; "
            "new jobs are refused once it is used up (0 = unlimited)."
        ),
    )
    quota_requests_per_minute: int = Field(
        0, ge=0, description="Playground (and serving) requests per minute per workspace; more get 429 with Retry-After (0 = unlimited)."
    )

    # --- throughput and estimates (issue 15) ---
    worker_allocator: str = Field(
        "auto",
        description=(
            "Memory allocator of `tailor worker` and `tailor engine`: auto (jemalloc where libjemalloc.so.2 is installed, "
            "else glibc's), jemalloc (refuse to start without it) or system (glibc's). jemalloc returns a CPU training "
            "step's freed memory: the demo job peaks at 1.49 GB instead of 1.65-1.93 GB."
        ),
    )
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
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id and self.oidc_client_secret)

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
