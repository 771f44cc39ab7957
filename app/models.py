"""Tables. Every row a user owns carries workspace_id; queries scope by it."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class WorkflowState(StrEnum):
    """Where a background task on an adapter (evaluation, an export) stands."""

    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


# The adapter's background workflows: each has `<key>_state` and `<key>_error` columns.
ADAPTER_WORKFLOWS = ("evaluation", "merged_export", "gguf_export")


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    workspace: Mapped[Workspace] = relationship()
    # --- roles (issue 16): viewer | member | owner within the workspace (app/domain/roles.py);
    # a disabled user cannot sign in and their sessions end.
    role: Mapped[str] = mapped_column(String(20), default="owner", server_default="owner")
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    user: Mapped[User] = relationship()
    # --- serving (migration 0012): what the token may do ("serve": /v1, "manage": /api/v1), space-separated;
    # when it stops working (None: never) and when it was revoked.
    scopes: Mapped[str] = mapped_column(String(100), default="serve manage", server_default="serve manage")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    name: Mapped[str] = mapped_column(String(300))
    original_filename: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list[Any]] = mapped_column(JSON)
    encoding: Mapped[str] = mapped_column(String(40))
    delimiter: Mapped[str] = mapped_column(String(4))
    storage_key: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    source_format: Mapped[str] = mapped_column(String(10), default="csv", server_default="csv")
    sheet_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Computed once at upload (app/services/profiling.py); None for datasets stored before profiles.
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    ingest_notes: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # True while a masked training copy (personal data replaced) exists next to the original.
    pii_masked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True, index=True)
    # A separately uploaded validation file (another dataset of the workspace); None = split off a share of dataset_id.
    validation_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True, index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    name: Mapped[str] = mapped_column(String(300))
    task: Mapped[str] = mapped_column(String(40))
    column_mapping: Mapped[dict[str, Any]] = mapped_column(JSON)
    base_model: Mapped[str] = mapped_column(String(300))
    technique: Mapped[str] = mapped_column(String(60))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    queue: Mapped[str] = mapped_column(String(40), default="gpu")
    # Jobs started together as a bake-off (one per technique, same data and base model).
    group_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.queued, index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    epoch: Mapped[float] = mapped_column(Float, default=0.0)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    dataset: Mapped[Dataset | None] = relationship(foreign_keys=[dataset_id])
    validation_dataset: Mapped[Dataset | None] = relationship(foreign_keys=[validation_dataset_id])
    # preference tuning: continue from this adapter of the workspace (its weights start the new one
    # and it is the reference); None = start from the base model.
    parent_adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL", use_alter=True), nullable=True)
    # --- distributed (issue 13): the device layout planned at submit (app/domain/layouts.py) and
    # every rank's last report ({rank: {host, pid, memory_bytes, step}}) while it runs.
    layout: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    ranks: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    @property
    def is_finished(self) -> bool:
        return JobStatus(self.status).finished


class JobAttempt(Base):
    """One run of a job on a worker: who, when, from which step to which, and how it ended
    (succeeded, failed, cancelled, or lost when the worker stopped responding)."""

    __tablename__ = "job_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    worker_name: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_step: Mapped[int] = mapped_column(Integer, default=0)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class MetricPoint(Base):
    __tablename__ = "metric_points"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    learning_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    validation_loss: Mapped[float | None] = mapped_column(Float, nullable=True)  # only on steps that measured it
    grad_norm: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # preference tuning: a task kind's own numbers for the step (chosen_logps, rejected_logps)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("workspace_id", "slug", name="uq_adapters_workspace_slug"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, unique=True)
    name: Mapped[str] = mapped_column(String(300))
    technique: Mapped[str] = mapped_column(String(60))
    base_model: Mapped[str] = mapped_column(String(300))
    storage_key: Mapped[str] = mapped_column(String(500))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    trainable_parameters: Mapped[int] = mapped_column(BigInteger, default=0)
    # Measurements only (losses, the evaluation summary, the base model's provenance); the
    # workflows' states live in their own columns below.
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # draft (just trained) -> approved (cleared to ship) -> archived (kept, hidden from pickers)
    status: Mapped[str] = mapped_column(String(20), default="draft", server_default="draft")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Background work on the adapter (app/services/adapter_workflows.py): None (never asked) ->
    # queued -> running -> done | failed, each step a conditional UPDATE; the error is for people.
    evaluation_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    evaluation_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    merged_export_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    merged_export_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    gguf_export_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    gguf_export_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    gguf_export_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    job: Mapped[Job | None] = relationship(foreign_keys=[job_id])  # (jobs.parent_adapter_id points back: name the key)
    # --- serving (migration 0012): the model name clients call it by on /v1 (unique in the workspace,
    # never changed once given), and the optional request log with its retention in days.
    slug: Mapped[str | None] = mapped_column(String(120), nullable=True)
    request_log_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    request_log_retention_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")

    @property
    def metrics_with_states(self) -> dict[str, Any]:
        """The metrics as the API has always shown them: each requested workflow's state and
        error beside them (and the GGUF file's size once written)."""
        shown = dict(self.metrics or {})
        for key in ADAPTER_WORKFLOWS:
            if getattr(self, f"{key}_state") is not None:
                shown[f"{key}_state"] = getattr(self, f"{key}_state")
                shown[f"{key}_error"] = getattr(self, f"{key}_error")
        if self.gguf_export_bytes is not None:
            shown["gguf_export_bytes"] = self.gguf_export_bytes
        return shown


class WorkerNode(Base):
    """A worker process as it last reported itself; its current job is derived from the jobs
    table (status running, worker_name = name), never stored twice."""

    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, index=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(200))
    device_memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # --- distributed (issue 13): every device the worker offers ([{index, name, kind, memory_bytes}]).
    devices: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # throughput (issue 15): the worker's own measured speed (useful FLOP/s of an adapter training
    # step, app/domain/estimates.py's FLOP count), from worker/calibration.py at start; None until measured.
    calibrated_flops: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the memory allocator the worker runs on ("jemalloc" | "system", app/worker_environment.py): a CPU
    # job's peak memory depends on it; None until reported.
    allocator: Mapped[str | None] = mapped_column(String(40), nullable=True)


class ReviewItem(Base):
    """One blind comparison: a prompt and two answers whose sources stay on the server until voted
    and are never shown to the reviewer. Targets are 'base' or 'adapter:<id>'."""

    __tablename__ = "review_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    left_target: Mapped[str] = mapped_column(String(40))
    right_target: Mapped[str] = mapped_column(String(40))
    prompt: Mapped[str] = mapped_column(Text)
    left_answer: Mapped[str] = mapped_column(Text)
    right_answer: Mapped[str] = mapped_column(Text)
    choice: Mapped[str | None] = mapped_column(String(10), nullable=True)  # "left" | "right" | "tie"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    voted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AdapterDownload(Base):
    """Who downloaded which adapter, and when."""

    __tablename__ = "adapter_downloads"
    id: Mapped[int] = mapped_column(primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- roles, invites and the audit log (issue 16) ---


class Invite(Base):
    """A one-time link that lets someone join a workspace with a role. Only the token's SHA-256
    is stored; accepting sets accepted_at (once, by a conditional UPDATE)."""

    __tablename__ = "invites"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEvent(Base):
    """Who did what, to what, when and from where. Written by app/services/audit.py only; the app
    has no route that changes or deletes a row. user_id is a plain number (no foreign key) and the
    email a snapshot, so the record outlives the account."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    workspace_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    user_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    action: Mapped[str] = mapped_column(String(60), index=True)
    target_type: Mapped[str | None] = mapped_column(String(40), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(400), nullable=True)


# --- sessions and single sign-on (issue 16) ---


class UserSession(Base):
    """A browser sign-in kept on the server: the cookie carries only a random id whose SHA-256 is
    `id_hash`. Signing out, a password change or disabling the user sets `ended_at`, and from then
    on the cookie is refused (app/services/user_sessions.py)."""

    __tablename__ = "user_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    # How the person signed in: "password" or "sso".
    method: Mapped[str] = mapped_column(String(20), default="password")
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    user: Mapped[User] = relationship()


class SsoIdentity(Base):
    """A user's account at an OpenID Connect provider (issuer + subject), linked at the first SSO sign-in."""

    __tablename__ = "sso_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_sso_identities_issuer_subject"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# --- serving ---


class ServingUsage(Base):
    """One request to /v1: who (workspace, token), which model (an adapter or a base model alone),
    tokens, latency, time to the first token and the HTTP status it ended with."""

    __tablename__ = "serving_usage"
    __table_args__ = (Index("ix_serving_usage_workspace_created", "workspace_id", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="SET NULL"), nullable=True, index=True)
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"), nullable=True, index=True)
    model: Mapped[str] = mapped_column(String(300))  # the name the client called
    base_model: Mapped[str] = mapped_column(String(300))
    endpoint: Mapped[str] = mapped_column(String(40))  # "chat.completions" | "completions"
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    first_token_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ServingLogEntry(Base):
    """A prompt and its answer, kept for an adapter whose request log is on (for its retention period)."""

    __tablename__ = "serving_request_log"
    __table_args__ = (Index("ix_serving_request_log_adapter_created", "adapter_id", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # rated request log: a reviewer's thumbs up (True) or down (False), None while unrated
    rating: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    rated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# --- preference tuning ---


class Correction(Base):
    """A better answer written under a model's answer in the playground: the prompt, the model's
    answer (rejected) and the correction (chosen), for a preference dataset."""

    __tablename__ = "corrections"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    target: Mapped[str] = mapped_column(String(40))  # 'base' or 'adapter:<id>', as in the playground
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    correction: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- quotas (issue 16) ---
class WorkspaceQuota(Base):
    """An instance administrator's limits for one workspace. A NULL column means the default from
    settings (TAILOR_QUOTA_*); 0 means unlimited. Enforced by app/services/quotas.py."""

    __tablename__ = "workspace_quotas"
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_running_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_hours_per_month: Mapped[float | None] = mapped_column(Float, nullable=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)


class WorkflowRun(Base):
    """One run of an adapter's workflow (evaluation, merged or GGUF export) on a worker, for the
    workspace's GPU hours (app/services/quotas.py): opened when a worker starts it, closed when it
    finishes (app/services/adapter_workflows.py). Kept when the adapter is deleted: the time was used."""

    __tablename__ = "workflow_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"), nullable=True, index=True)
    workflow: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)


# --- throughput (issue 15) ---


class ThroughputMeasurement(Base):
    """What one finished job measured on its worker: real tokens/s and peak memory, by worker,
    base model and technique. Later estimates for the same combination use it (app/services/job_estimates.py)."""

    __tablename__ = "throughput_measurements"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    worker_name: Mapped[str] = mapped_column(String(200), index=True)
    device: Mapped[str] = mapped_column(String(200))
    base_model: Mapped[str] = mapped_column(String(500))
    technique: Mapped[str] = mapped_column(String(50))
    batch_size: Mapped[int] = mapped_column(Integer)
    max_length: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(BigInteger)
    train_seconds: Mapped[float] = mapped_column(Float)
    tokens_per_second: Mapped[float] = mapped_column(Float)
    peak_memory_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
