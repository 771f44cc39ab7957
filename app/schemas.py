"""Request and response models of the JSON API (XCreate / XPublic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.services.playground import MAX_NEW_TOKENS


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    original_filename: str
    sha256: str
    size_bytes: int
    row_count: int
    columns: list[str]
    encoding: str
    delimiter: str
    created_at: datetime
    source_format: str = "csv"
    sheet_name: str | None = None
    pii_masked: bool = False


class DatasetDetail(DatasetPublic):
    preview: list[dict[str, str]] = Field(default_factory=list, description="First rows; formula-like cells start with an apostrophe.")
    notes: list[str] = Field(
        default_factory=list, description="What ingestion fixed or noticed: renamed headers, ragged rows, encodings, sheets."
    )
    already_uploaded: bool = False
    profile: dict[str, Any] | None = Field(None, description="The profile computed at upload (see GET /datasets/{id}/profile).")


class DatasetRowPublic(BaseModel):
    row: int = Field(..., description="Row number in the dataset (1-based, header not counted).")
    cells: dict[str, str]


class DatasetRowsPage(BaseModel):
    page: int
    page_size: int
    query: str
    has_next: bool
    total: int | None = Field(None, description="All rows, or all matches of the query; null when a search stopped at this page.")
    rows: list[DatasetRowPublic]


class PersonalDataMasking(BaseModel):
    mask: bool = Field(
        ..., description="True: train on a copy with personal data replaced by [EMAIL], [PHONE], ...; false: on the original."
    )


class PersonalDataMaskingResult(BaseModel):
    pii_masked: bool
    masked: dict[str, int] = Field(default_factory=dict, description="Values replaced, per kind.")


class LabelDistributionPublic(BaseModel):
    column: str
    counts: list[dict[str, Any]]
    empty: int
    warnings: list[str]
    problems: list[str]


class ParamPublic(BaseModel):
    name: str
    label: str
    kind: str
    default: Any
    help: str
    minimum: float | None
    maximum: float | None
    choices: list[str]
    advanced: bool


class TechniquePublic(BaseModel):
    key: str
    name: str
    summary: str
    description: str
    task_kinds: list[str]
    typical_adapter_size: str
    memory_needs: str
    requires_cuda: bool
    family: str = "lora"
    hardware: str = ""
    needs_decoder: bool = False
    quantized_bits: int = 0
    params: list[ParamPublic]


class BaseModelPublic(BaseModel):
    key: str
    label: str
    source: str
    parameters: str
    description: str
    available: bool


class JobCreate(BaseModel):
    dataset_id: int
    task: str = Field(
        "instruction",
        description="Task kind: 'instruction' (prompt -> response, optional system/context), "
        "'text' (continued training), 'classification' (text -> label), 'preference' (prompt -> chosen vs "
        "rejected answer) or 'feedback' (prompt -> answer marked good or bad).",
    )
    column_mapping: dict[str, Any] = Field(
        ...,
        description="Role -> column name. instruction: {'prompt', 'response', optional 'system', "
        "'context'}; text: {'text_columns': [...]}; classification: {'text', 'label'}; preference: {'prompt', "
        "'chosen', 'rejected', optional 'system', 'context'}; feedback: {'prompt', 'answer', 'feedback', optional "
        "'system', 'context'}.",
    )
    base_model: str = Field(..., description="Key of a base model from GET /base-models.")
    technique: str = Field("lora", description="Key of a technique from GET /techniques.")
    params: dict[str, Any] = Field(default_factory=dict, description="Technique and training parameters; omitted ones take their defaults.")
    preset: str | None = Field(
        None, description="quick, balanced or thorough: fills the parameters that `params` leaves out, for the data size."
    )
    seed: int = 0
    name: str | None = None
    validation_dataset_id: int | None = Field(
        None,
        description="Another dataset of the workspace with the same mapped columns to "
        "validate on; when absent, params.validation_fraction of the rows is held out.",
    )
    parent_adapter_id: int | None = Field(
        None,
        description="Preference and feedback tasks: continue from this adapter of the workspace (same base model and "
        "technique); its weights start the new adapter and it is the reference the preferences are measured against.",
    )
    # --- distributed (issue 13) ---
    devices: str = Field(
        "1", description="'1' (one device), 'all' (every device of one machine) or 'KxM' (K machines x M devices; needs a Ray cluster)."
    )
    strategy: str = Field("auto", description="'auto' (DDP when the model fits one device, else FSDP; with its reason), 'ddp' or 'fsdp'.")
    cpu_offload: bool = Field(False, description="FSDP on GPUs: keep sharded weights and optimiser state in host memory.")


class JobPreviewRequest(BaseModel):
    dataset_id: int
    task: str = "instruction"
    column_mapping: dict[str, Any] = Field(..., description="As in JobCreate.")
    base_model: str = Field(..., description="Key of a base model from GET /base-models; its own tokenizer and chat template are used.")
    max_length: int = Field(256, ge=2, le=1_000_000, description="The job's maximum length in tokens.")
    validation_dataset_id: int | None = Field(None, description="As in JobCreate (adds its labels to a classifier's class ids).")
    rows: int = Field(3, ge=1, le=20, description="How many rows to show.")


class MetricPointPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    step: int
    epoch: float
    loss: float | None
    learning_rate: float | None
    tokens_per_second: float | None
    validation_loss: float | None = None
    grad_norm: float | None = None
    memory_bytes: int | None = None
    extra: dict[str, float] | None = Field(None, description="Preference tuning: the step's mean chosen_logps and rejected_logps.")


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    status: str
    dataset_id: int | None
    task: str
    column_mapping: dict[str, Any]
    base_model: str
    technique: str
    params: dict[str, Any]
    seed: int
    attempt: int
    cancel_requested: bool
    error: str | None
    step: int
    total_steps: int
    epoch: float
    eta_seconds: float | None
    result: dict[str, Any]
    group_id: str | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    adapter_id: int | None = None
    validation_dataset_id: int | None = None
    parent_adapter_id: int | None = None
    validation: dict[str, Any] | None = Field(
        None,
        description="Where the validation rows come from: source 'split' (fraction) or "
        "'file' (dataset_id, dataset_name); rows, train_rows, and the leakage check.",
    )
    layout: dict[str, Any] | None = Field(
        None, description="Device layout: machines, devices_per_machine, strategy and its reason, memory per device, time."
    )
    ranks: dict[str, Any] | None = Field(None, description="While running on several devices: each rank's host, memory_bytes and step.")


class JobAttemptPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    number: int
    worker_name: str
    started_at: datetime
    started_step: int
    ended_at: datetime | None
    ended_step: int | None
    outcome: str | None = Field(
        None, description="succeeded, failed, cancelled, lost (the worker stopped responding), or null while it runs"
    )
    reason: str | None


class JobDetail(JobPublic):
    metrics: list[MetricPointPublic] = []
    attempts: list[JobAttemptPublic] = []


class AdapterPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    job_id: int | None
    technique: str
    base_model: str
    size_bytes: int
    trainable_parameters: int
    metrics: dict[str, Any] = Field(validation_alias="metrics_with_states")  # workflow states shown beside the metrics, as before
    status: str
    created_at: datetime
    download_url: str = ""
    slug: str | None = Field(None, description="The adapter's model name on the /v1 serving endpoint (served once approved).")


class WorkerPublic(BaseModel):
    name: str
    hostname: str
    queues: list[str]
    device: str
    device_memory_bytes: int | None
    state: str = Field(..., description="busy, idle, offline (no heartbeat lately) or stopped")
    heartbeat_at: datetime
    current_job_id: int | None
    current_job_name: str | None
    devices: list[dict[str, Any]] | None = Field(None, description="Every device the worker offers: index, name, kind, memory_bytes.")
    calibrated_flops: float | None = Field(None, description="The worker's own measured training speed (useful FLOP/s), once measured.")
    allocator: str | None = Field(None, description="The memory allocator it runs on: jemalloc or system (CPU memory estimates use it).")


class WorkersBoard(BaseModel):
    counts: dict[str, int] = Field(..., description="Workers per state: busy, idle, offline, stopped.")
    workers: list[WorkerPublic] = Field(..., description="Each worker's details; for instance administrators only (empty for others).")


class AdapterUpdate(BaseModel):
    status: str = Field(..., description="draft, approved or archived")


class AdapterDownloadPublic(BaseModel):
    user: str | None = Field(None, description="Who downloaded it (email), or null for a deleted account.")
    at: str = Field(..., description="When (ISO 8601).")


class MergedExportRequested(BaseModel):
    adapter_id: int
    merged_export_state: str | None


class GgufExportRequested(BaseModel):
    adapter_id: int
    gguf_export_state: str | None


class EvaluationRequested(BaseModel):
    adapter_id: int
    evaluation_state: str | None


class ComparisonPublic(BaseModel):
    adapters: list[dict[str, Any]] = Field(..., description="One summary row per adapter: metrics with intervals, job settings.")
    base_metrics: dict[str, Any]
    base_label: str
    task: str | None
    best: dict[str, int] = Field(..., description="Column -> the adapter id with the best value.")
    parameter_diff: dict[str, list[Any]] = Field(..., description="Setting -> each job's value, for the settings that differ.")
    loss_curves: list[dict[str, Any]]
    side_by_side: list[dict[str, Any]]
    verdicts: list[str] = Field(..., description="What the comparison says, in words.")
    blind_review: list[dict[str, Any]] = Field(..., description="Win rates from blind review votes.")
    metric_names: dict[str, str]


class DatasetProfilePublic(BaseModel):
    """The profile computed at upload (older profiles may lack a section; only what it has is sent)."""

    model_config = ConfigDict(extra="allow")
    version: int | None = None
    row_count: int | None = None
    columns: list[dict[str, Any]] = Field(
        default_factory=list, description="Per column: type guess, empties, lengths, frequent values, personal data."
    )
    duplicates: dict[str, Any] | None = Field(None, description="Exact and near-duplicate rows, with examples.")


class TokenLengthsPublic(BaseModel):
    model_config = ConfigDict(extra="allow")
    base_model: str
    columns: list[str]
    measured_rows: int
    total_rows: int
    sampled: bool
    max_length: int


class ColumnGuessPublic(BaseModel):
    """Role -> the column that probably fills it (null when none fits), or a list for several-column roles."""

    model_config = ConfigDict(extra="allow")


class LeakagePublic(BaseModel):
    exact: int
    near: int
    validation_rows: int
    examples: list[dict[str, Any]]
    message: str | None


class SplitCheckPublic(BaseModel):
    """A held-out share of the dataset (source 'split')."""

    model_config = ConfigDict(extra="forbid")
    train_rows: int
    validation_rows: int
    stratified: bool
    source: str = Field(..., description="'split' (a held-out share) or 'file' (validation_dataset_id).")
    leakage: LeakagePublic


class SplitCheckFilePublic(SplitCheckPublic):
    """A validation file (source 'file')."""

    validation_dataset_id: int


class BakeoffCreate(BaseModel):
    dataset_id: int
    task: str = "instruction"
    column_mapping: dict[str, Any]
    base_model: str
    techniques: list[str] = Field(..., description="Two to six technique keys from GET /techniques.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Shared training settings: epochs, batch_size, max_length, validation_fraction, max_steps."
    )
    seed: int = 0
    preset: str | None = None
    validation_dataset_id: int | None = Field(
        None, description="Another dataset of the workspace to validate on instead of holding out a share."
    )


class BakeoffCreated(BaseModel):
    group_id: str
    job_ids: list[int]
    url: str


class BakeoffJobPublic(BaseModel):
    id: int
    name: str
    technique: str
    status: str
    error: str | None
    adapter_id: int | None
    evaluation_state: str | None


class BakeoffPublic(BaseModel):
    group_id: str
    finished: bool
    training_done: bool
    jobs: list[BakeoffJobPublic]
    adapter_ids: list[int]
    recommendation: str | None = Field(None, description="Which technique to use and why, once every job is trained and scored.")
    compare_url: str | None


class JobPreviewPublic(BaseModel):
    max_length: int
    examples: list[dict[str, Any]] = Field(
        ..., description="Per row: task, truncated, dropped, note, label, class_id, titles (chosen | rejected), tokens, parts."
    )
    skipped: dict[str, int] = Field(
        default_factory=dict, description="Rows left out and why (preference: identical answers, one-sided rows, empty answers)."
    )


class PlaygroundCreate(BaseModel):
    prompt: str
    adapter_ids: list[int]
    include_base: bool = True
    max_new_tokens: int = Field(128, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=2.0)


class PlaygroundStarted(BaseModel):
    id: str
    targets: list[str]


class PlaygroundAnswers(BaseModel):
    answers: dict[str, str] = Field(..., description="Target ('base' or 'adapter:ID') -> the text generated so far.")
    done: list[str]
    finished: bool
    error: str | None


class Vote(BaseModel):
    choice: str


class ReviewPair(BaseModel):
    token: str
    prompt: str
    left: str
    right: str


class VoteRecorded(BaseModel):
    recorded: str


# --- sessions (issue 16) ---


class SessionPublic(BaseModel):
    """One of the signed-in person's browser sessions."""

    id: int
    created_at: datetime
    last_seen_at: datetime
    ip_address: str
    user_agent: str
    method: str = Field(..., description="How it signed in: 'password' or 'sso'.")
    current: bool = Field(..., description="True for the session making this request.")


class SessionsEnded(BaseModel):
    ended: int


class PasswordChange(BaseModel):
    current_password: str = Field("", max_length=1000)
    new_password: str = Field(..., max_length=1000)


# --- preference tuning ---


class VoteCounts(BaseModel):
    votes: int = Field(..., description="Voted blind pairs in scope.")
    pairs: int = Field(..., description="Rows a preference dataset from them would have (winner chosen, loser rejected).")
    ties: int
    left_out: int = Field(..., description="Votes that yield no pair: ties, and pairs whose two answers are the same text.")


class VotesDatasetCreate(BaseModel):
    adapter_ids: list[int] = Field(default_factory=list, description="Votes involving these adapters; empty = the whole workspace.")
    comparison: bool = Field(False, description="Only pairs whose both sides are among adapter_ids or the base model.")


class CorrectionCreate(BaseModel):
    prompt: str
    answer: str = Field(..., description="The model's answer (becomes the rejected one).")
    correction: str = Field(..., description="The better answer (becomes the chosen one).")
    target: str = Field("base", description="Who answered: 'base' or 'adapter:<id>', as in the playground.")


class CorrectionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    target: str
    prompt: str
    answer: str
    correction: str
    created_at: datetime
