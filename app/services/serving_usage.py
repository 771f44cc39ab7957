"""Usage of /v1: one row per request, and its summary per adapter (or base model) per day with
requests, prompt and completion tokens and latency percentiles."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Adapter, ServingUsage, utcnow

MAX_DAYS = 366


@dataclass(frozen=True)
class UsageRecord:
    workspace_id: int
    token_id: int | None
    adapter_id: int | None
    model: str
    base_model: str
    endpoint: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    first_token_ms: int | None = None
    streamed: bool = False


def record_usage(db: Session, record: UsageRecord) -> None:
    db.add(ServingUsage(**record.__dict__))
    db.flush()


def percentile(values: list[int], share: float) -> int | None:
    """The nearest-rank percentile (p50 of [1, 2, 3, 4] is 2; p95 of 20 values is the 19th)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(share * 100) * len(ordered) // 100))  # ceil(share × n), at least 1
    return ordered[min(rank, len(ordered)) - 1]


def usage_summary(db: Session, workspace_id: int, days: int = 30, now: datetime | None = None) -> list[dict]:
    """Per day and model (newest day first): requests, errors, prompt and completion tokens, p50/p95
    latency and p50 time to first token, over the workspace's requests of the last `days` days."""
    days = max(1, min(int(days), MAX_DAYS))
    since = (now or utcnow()) - timedelta(days=days)
    rows = db.execute(
        select(ServingUsage, Adapter.name)
        .outerjoin(Adapter, Adapter.id == ServingUsage.adapter_id)
        .where(ServingUsage.workspace_id == workspace_id, ServingUsage.created_at >= since)
    ).all()
    groups: dict[tuple[str, str], dict] = {}
    latencies: dict[tuple[str, str], list[int]] = defaultdict(list)
    firsts: dict[tuple[str, str], list[int]] = defaultdict(list)
    for usage, adapter_name in rows:
        created = usage.created_at if usage.created_at.tzinfo else usage.created_at.replace(tzinfo=UTC)
        key = (created.date().isoformat(), usage.model)
        group = groups.setdefault(
            key,
            {
                "day": key[0],
                "model": usage.model,
                "adapter_id": usage.adapter_id,
                "adapter_name": adapter_name,
                "base_model": usage.base_model,
                "requests": 0,
                "errors": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
            },
        )
        group["requests"] += 1
        group["errors"] += usage.status >= 400
        group["prompt_tokens"] += usage.prompt_tokens
        group["completion_tokens"] += usage.completion_tokens
        if usage.status < 400:
            latencies[key].append(usage.latency_ms)
            if usage.first_token_ms is not None:
                firsts[key].append(usage.first_token_ms)
    for key, group in groups.items():
        group["latency_p50_ms"] = percentile(latencies[key], 0.5)
        group["latency_p95_ms"] = percentile(latencies[key], 0.95)
        group["first_token_p50_ms"] = percentile(firsts[key], 0.5)
    return sorted(groups.values(), key=lambda g: (g["day"], g["model"]), reverse=True)
