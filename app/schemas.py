"""Request and response models of the JSON API (XCreate / XPublic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class DatasetDetail(DatasetPublic):
    preview: list[dict[str, str]] = []
    notes: list[str] = []
    already_uploaded: bool = False


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
    task: str = Field("instruction", description="Task kind; 'instruction' maps a prompt column to a response column.")
    column_mapping: dict[str, str] = Field(..., description="Role -> column name, e.g. {'prompt': 'question', 'response': 'answer'}.")
    base_model: str = Field(..., description="Key of a base model from GET /base-models.")
    technique: str = Field("lora", description="Key of a technique from GET /techniques.")
    params: dict[str, Any] = Field(default_factory=dict, description="Technique and training parameters; omitted ones take their defaults.")
    seed: int = 0
    name: str | None = None


class MetricPointPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    step: int
    epoch: float
    loss: float | None
    learning_rate: float | None
    tokens_per_second: float | None


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    status: str
    dataset_id: int | None
    task: str
    column_mapping: dict[str, str]
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
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    adapter_id: int | None = None


class JobDetail(JobPublic):
    metrics: list[MetricPointPublic] = []


class AdapterPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    job_id: int | None
    technique: str
    base_model: str
    size_bytes: int
    trainable_parameters: int
    metrics: dict[str, Any]
    created_at: datetime
    download_url: str = ""
