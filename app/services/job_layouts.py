"""A job's device layout: planned at submit from the workers' devices (app/domain/layouts.py),
every rank's last report while it runs, and a lost rank putting the job back in the queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import rows_matched
from app.domain.layouts import DeviceRequest, LayoutError, LayoutPlan, parse_devices, plan_layout
from app.domain.task_kinds import TASK_KINDS
from app.domain.techniques import get_technique
from app.models import Dataset, Job, JobStatus, utcnow
from app.services import attempts


@dataclass(frozen=True)
class Machine:
    """The biggest machine among the live workers: its device kind, devices and memory per device."""

    device_kind: str = "cpu"
    devices: int = 1
    memory_bytes: int | None = None


def largest_machine(db: Session | None) -> Machine:
    if db is None:
        return Machine()
    try:
        from app.services.workers import worker_board

        live = [w for w in worker_board(db, -1) if w.state in ("idle", "busy")]
    except Exception:  # noqa: BLE001 - no worker board yet: assume one CPU
        return Machine()
    best = Machine()
    for worker in live:
        devices = worker.devices or [
            {"kind": "cuda" if worker.device.startswith("cuda") else "cpu", "memory_bytes": worker.device_memory_bytes}
        ]
        kind = str(devices[0].get("kind") or "cpu")
        memory = min((int(d["memory_bytes"]) for d in devices if d.get("memory_bytes")), default=None)
        candidate = Machine(kind, len(devices), memory)
        if (candidate.device_kind == "cuda", candidate.devices) > (best.device_kind == "cuda", best.devices):
            best = candidate
    if best == Machine() and live:
        return Machine("cpu", 1, live[0].device_memory_bytes)
    return best


def plan_for(
    db: Session | None,
    settings: Settings,
    dataset: Dataset,
    config: dict | None,
    technique: str,
    clean_params: dict[str, Any],
    task: str,
    mapping: dict[str, Any],
    *,
    devices: str = "1",
    strategy: str = "auto",
    cpu_offload: bool = False,
    tokens_per_row: float | None = None,
) -> LayoutPlan:
    """The layout plan of a job request; LayoutError for a request that cannot be read."""
    from app.domain.estimates import mean_tokens_per_row

    request = parse_devices(devices)
    kind = TASK_KINDS.get(task)
    if kind is not None and not kind.multi_device and request != DeviceRequest():
        raise LayoutError(f"{kind.label} jobs run on one device for now; choose 1 device.")
    machine = largest_machine(db)
    entry = get_technique(technique)
    labels = 0
    if kind is not None and kind.label_role is not None and mapping.get(kind.label_role.key):
        by_name = {c["name"]: c for c in (dataset.profile or {}).get("columns", [])}
        labels = int((by_name.get(mapping[kind.label_role.key]) or {}).get("distinct") or 2)
    return plan_layout(
        config,
        technique,
        clean_params,
        task=task,
        n_rows=max(2, int(dataset.row_count or 0)),
        tokens_per_row=tokens_per_row if tokens_per_row is not None else mean_tokens_per_row(dataset.profile, task, mapping),
        request=request,
        device_kind=machine.device_kind,
        device_memory_bytes=machine.memory_bytes,
        devices_on_machine=machine.devices,
        strategy=strategy,
        cpu_offload=cpu_offload,
        num_labels=labels,
        quantized_bits=int(clean_params.get("bits", 0) or 0) if entry.quantized_bits else 0,
        cluster_configured=bool(settings.ray_address),
    )


def layout_errors(plan: LayoutPlan | None, error: LayoutError | None) -> dict[str, str]:
    """The form's message for a layout that cannot run (one device keeps the estimate's own check)."""
    if error is not None:
        return {"devices": str(error)}
    if plan is not None and plan.refusal and (plan.world > 1 or plan.machines > 1):
        return {"devices": plan.refusal}
    return {}


def record_ranks(db: Session, job_id: int, ranks: dict[int, dict[str, Any]]) -> None:
    """Every rank's last report (host, pid, memory, step), shown on the job page."""
    db.execute(update(Job).where(Job.id == job_id).values(ranks={str(rank): dict(info) for rank, info in sorted(ranks.items())}))


LOST_RANK = (
    "A rank of this job stopped without an error (killed, out of memory or its machine was lost); the job was put back in the queue."
)


def release_lost_attempt(db: Session, job_id: int, reason: str = LOST_RANK) -> bool:
    """running -> queued after a lost rank, exactly as the reconciler treats a dead worker: the
    attempt is closed as lost (three in a row at the same step end the job as failed) and the
    reconciler sends the job again; it resumes from its last checkpoint. False if not running."""
    now = utcnow()
    if not rows_matched(
        db,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running)
        .values(status=JobStatus.queued, error=reason, enqueued_at=None, ranks=None),
    ):
        return False
    step = db.scalar(select(Job.step).where(Job.id == job_id))
    history = attempts.close_attempt(db, job_id, attempts.LOST, ended_step=step, reason=reason, at=now)
    if attempts.lost_the_same_way(history):
        db.execute(
            update(Job).where(Job.id == job_id).values(status=JobStatus.failed, finished_at=now, error=attempts.gave_up_reason(history))
        )
    return True


def plan_or_errors(
    db: Session,
    settings: Settings,
    dataset: Dataset,
    config: dict | None,
    technique: str,
    clean_params: dict[str, Any],
    task: str,
    mapping: dict[str, Any],
    devices: str,
    strategy: str,
    cpu_offload: bool,
) -> tuple[LayoutPlan | None, dict[str, str]]:
    """The plan of a job being submitted, and the form's errors when it cannot run."""
    plan, error = None, None
    try:
        plan = plan_for(
            db,
            settings,
            dataset,
            config,
            technique,
            clean_params,
            task,
            mapping,
            devices=devices,
            strategy=strategy,
            cpu_offload=cpu_offload,
        )
    except LayoutError as exc:
        error = exc
    return plan, layout_errors(plan, error)
