"""Request and response models of the JSON API for quotas (app/services/quotas.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class QuotaLine(BaseModel):
    key: str = Field(..., description="max_queued_jobs, max_running_jobs, gpu_hours_per_month or requests_per_minute")
    label: str
    limit: float = Field(..., description="The limit in force (0 = unlimited)")
    override: float | None = Field(None, description="This workspace's own limit; null = the instance default")
    used: float | None = Field(None, description="Used now (queued, running), this month (GPU hours) or this minute (requests)")


class WorkspaceQuotaPublic(BaseModel):
    workspace_id: int
    workspace_name: str
    quotas: list[QuotaLine]


class QuotaUpdate(BaseModel):
    """A workspace's overrides; null or left out = the instance default, 0 = unlimited."""

    max_queued_jobs: int | None = Field(None, ge=0, le=1_000_000_000)
    max_running_jobs: int | None = Field(None, ge=0, le=1_000_000_000)
    gpu_hours_per_month: float | None = Field(None, ge=0, le=1_000_000_000, allow_inf_nan=False)
    requests_per_minute: int | None = Field(None, ge=0, le=1_000_000_000)
