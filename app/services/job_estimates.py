"""A job's pre-launch estimate (memory, time, adapter size) for the worker most likely to take it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from app.config import get_settings
from app.domain.estimates import WorkerClass, estimate_job, held_out_rows, mean_tokens_per_row, worker_class_from_device
from app.domain.evaluation_costs import answered_rows
from app.domain.task_kinds import TASK_KINDS
from app.domain.techniques import ParameterError, WorkerPace, get_technique, validate_params
from app.models import Adapter, Dataset, Job


def preferred_worker(db: Session | None) -> WorkerClass | None:
    """The class of the worker most likely to take a job: a live GPU worker if any, else a live CPU one."""
    if db is None:
        return None
    try:
        from app.services.workers import worker_board

        live = [w for w in worker_board(db, -1) if w.state in ("idle", "busy")]
    except Exception:  # noqa: BLE001 - no worker table or board yet: the estimate assumes a CPU worker
        return None
    live.sort(key=lambda w: (not w.device.startswith("cuda"), w.state != "idle"))
    if not live:
        return None
    from app.services.throughput import measurements_of

    chosen = live[0]
    return worker_class_from_device(
        chosen.device,
        chosen.device_memory_bytes,
        name=chosen.name,
        calibrated_flops=chosen.calibrated_flops,
        measurements=measurements_of(db, chosen.name),
        allocator=chosen.allocator,
    )


def _chosen(mapping: dict[str, Any] | None) -> dict[str, Any]:
    return {role: column for role, column in (mapping or {}).items() if column}


def base_side_cached(
    db: Session | None,
    dataset_id: int,
    base_model: str | None,
    task: str,
    mapping: dict[str, Any],
    *,
    fraction: float,
    seed: int,
    validation_dataset_id: int | None,
    answered: int,
) -> bool:
    """Whether an earlier job's evaluation asked the base model these very prompts: same dataset,
    columns, task, base model and split (fraction and seed, or the same validation file), as many
    answered rows. The worker cached the base model's answers and losses then
    (worker/evaluation/runner.py), so this job's evaluation pays for the adapter's side only."""
    if db is None or not base_model:
        return False
    same_file = Job.validation_dataset_id.is_(None) if validation_dataset_id is None else Job.validation_dataset_id == validation_dataset_id
    earlier = db.execute(
        select(Job.column_mapping, Job.params, Adapter.metrics)
        .join(Adapter, Adapter.job_id == Job.id)
        .where(Job.dataset_id == dataset_id, Job.base_model == base_model, Job.task == task, Job.seed == seed, same_file)
        .order_by(Job.id.desc())
        .limit(50)
    )
    wanted = _chosen(mapping)
    for job_mapping, params, metrics in earlier:
        evaluation = (metrics or {}).get("evaluation") or {}
        if evaluation.get("rows") != answered or _chosen(job_mapping) != wanted:
            continue
        if validation_dataset_id is None and float((params or {}).get("validation_fraction", 0.1)) != fraction:
            continue
        return True
    return False


def base_answers_reused(
    dataset: Dataset,
    base_model: str | None,
    task: str,
    mapping: dict[str, Any],
    worker_kind: str,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    validation_rows: int | None = None,
    validation_dataset_id: int | None = None,
) -> bool:
    """base_side_cached for a job of this dataset as the estimate sizes its held-out rows (the
    dataset's share, or a validation file's rows) on this kind of worker; False (no lookup) when
    jobs are not evaluated automatically."""
    if not get_settings().auto_evaluate:
        return False
    n_validation = validation_rows or held_out_rows(max(2, int(dataset.row_count or 0)), fraction)
    return base_side_cached(
        object_session(dataset),
        dataset.id,
        base_model,
        task,
        mapping,
        fraction=fraction,
        seed=seed,
        validation_dataset_id=validation_dataset_id if validation_rows else None,
        answered=answered_rows(n_validation, worker_kind),
    )


def estimate_for(
    dataset: Dataset,
    config: dict | None,
    technique: str,
    clean_params: dict[str, Any],
    task: str,
    mapping: dict[str, Any],
    worker: WorkerClass | None = None,
    validation_rows: int | None = None,
    base_model: str | None = None,
    *,
    seed: int = 0,
    validation_dataset_id: int | None = None,
    base_cached: bool | None = None,
) -> dict[str, Any]:
    """The pre-launch estimate as a plain dict ({"error": ...} when it cannot be made).

    `validation_rows` (a validation file's rows, `validation_dataset_id` that file): every dataset
    row trains, those rows validate. `seed` picks the split, like the job's. `base_cached`: whether
    the base model's side of the evaluation is reused (base_answers_reused; looked up when None).
    """
    if config is None:
        return {"error": "Choose an installed base model to see an estimate."}
    entry = get_technique(technique)
    labels = 0
    kind = TASK_KINDS.get(task)
    label_role = kind.label_role if kind is not None else None
    if label_role is not None and mapping.get(label_role.key):
        by_name = {c["name"]: c for c in (dataset.profile or {}).get("columns", [])}
        labels = int((by_name.get(mapping[label_role.key]) or {}).get("distinct") or 2)
    bits = int(clean_params.get("bits", 0) or 0) if entry.quantized_bits else 0
    worker = worker or WorkerClass("cpu")
    n_rows = max(2, int(dataset.row_count or 0))
    evaluate = get_settings().auto_evaluate
    if base_cached is None:
        base_cached = base_answers_reused(
            dataset,
            base_model,
            task,
            mapping,
            worker.kind,
            fraction=float(clean_params.get("validation_fraction", 0.1)),
            seed=seed,
            validation_rows=validation_rows,
            validation_dataset_id=validation_dataset_id,
        )
    cached = evaluate and bool(base_cached)
    if validation_rows:
        n_rows += validation_rows
        clean_params = {**clean_params, "validation_fraction": validation_rows / n_rows}
    try:
        estimate = estimate_job(
            config,
            technique,
            clean_params,
            task=task,
            n_rows=n_rows,
            tokens_per_row=mean_tokens_per_row(dataset.profile, task, mapping),
            worker=worker,
            num_labels=labels,
            quantized_bits=bits,
            base_model=base_model,
            evaluate=evaluate,
            base_cached=cached,
        )
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        estimate = None
    if estimate is None:
        return {"error": "This model's config.json lacks the sizes an estimate needs."}
    return {**estimate.as_dict(), "worker": worker.kind, "worker_cores": worker.cores, "base_answers_cached": cached}


def pace_for(
    dataset: Dataset,
    config: dict | None,
    technique: str,
    task: str,
    mapping: dict[str, Any],
    worker: WorkerClass | None,
    base_model: str | None = None,
    base_cached: bool | None = None,
) -> WorkerPace | None:
    """How fast the worker that would take the job gets through this dataset (one more epoch's
    seconds and the fixed rest of the wait), for the presets; None without a worker or an estimate.
    `base_cached` as for estimate_for (looked up once here when None)."""
    if worker is None or config is None:
        return None
    entry = get_technique(technique)
    if base_cached is None:
        base_cached = base_answers_reused(dataset, base_model, task, mapping, worker.kind)
    try:
        one, two = (
            estimate_for(
                dataset,
                config,
                technique,
                validate_params(entry, {"epochs": n}),
                task,
                mapping,
                worker,
                base_model=base_model,
                base_cached=base_cached,
            )  # fmt: skip
            for n in (1, 2)
        )
    except ParameterError:
        return None
    if "total_seconds" not in one or "total_seconds" not in two or two["total_seconds"] <= one["total_seconds"]:
        return None
    epoch = two["total_seconds"] - one["total_seconds"]
    return WorkerPace(epoch, max(0.0, one["total_seconds"] - epoch), int(one["steps"]))
