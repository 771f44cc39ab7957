"""Jobs: submit, cancel, claim, progress and outcome. The database is the source of truth; the
broker only carries wake-ups, so every transition here is a conditional UPDATE."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from itertools import islice
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import queue
from app.base_models import get_base_model
from app.config import Settings
from app.models import Adapter, Dataset, Job, JobStatus, MetricPoint, utcnow
from app.services.artifacts import LocalArtifactStore
from app.services import attempts
from app.services import column_checks, dataset_store, stored_rows, validation_split
from app.domain.estimates import WorkerClass, estimate_job, mean_tokens_per_row, read_model_config, worker_class_from_device
from app.domain.techniques import PRESETS, ParameterError, get_technique, preset_params, unavailable_reason, validate_params

log = logging.getLogger(__name__)

# Column roles each task needs (the mapping's keys); "text_columns" holds a list of columns.
TASK_COLUMNS: dict[str, tuple[str, ...]] = {
    "instruction": ("prompt", "response"),
    "text": ("text_columns",),
    "classification": ("text", "label"),
}
# Roles a task may map but does not need.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"instruction": ("system", "context")}
MIN_ROWS = 2


def clean_mapping(task: str, mapping: dict[str, Any]) -> dict[str, Any]:
    """Keep only the task's roles; text columns as a list, empty optional roles dropped."""
    clean: dict[str, Any] = {}
    for role in TASK_COLUMNS.get(task, ()) + OPTIONAL_COLUMNS.get(task, ()):
        value = mapping.get(role)
        if role == "text_columns":
            if isinstance(value, str):
                value = [c.strip() for c in value.split(",") if c.strip()]
            clean[role] = [str(c) for c in (value or [])]
        elif value:
            clean[role] = str(value)
    return clean


def task_rows(store: LocalArtifactStore, dataset: Dataset, task: str, mapping: dict[str, Any]) -> list[tuple]:
    """The usable rows of a task from the dataset's training copy (rows missing a needed value are skipped).

    instruction -> (prompt, response) or (prompt, response, system-and-context);
    text -> (text,) with the chosen columns joined by blank lines; classification -> (text, label).
    """
    return list(iter_task_rows(store, dataset, task, mapping))


def iter_task_rows(store: LocalArtifactStore, dataset: Dataset, task: str, mapping: dict[str, Any]) -> Iterator[tuple]:
    """task_rows, one at a time (a preview needs only the first few)."""
    for row in stored_rows.iter_training_rows(store, dataset):
        def value(role: str) -> str:
            column = mapping.get(role)
            return (row.get(column) or "").strip() if column else ""

        if task == "instruction":
            prompt, response = value("prompt"), value("response")
            if prompt and response:
                extra = "\n\n".join(v for v in (value("system"), value("context")) if v)
                yield (prompt, response, extra) if extra else (prompt, response)
        elif task == "text":
            text = "\n\n".join(v for v in ((row.get(c) or "").strip() for c in mapping.get("text_columns", [])) if v)
            if text:
                yield (text,)
        elif task == "classification":
            text, label = value("text"), value("label")
            if text and label:
                yield (text, label)


def split_task_rows(rows: list[tuple], task: str, fraction: float, seed: int) -> tuple[list, list]:
    """Held-out split; classification keeps every label's share in both parts."""
    stratify = (lambda row: row[1]) if task == "classification" else None
    return validation_split.split_train_validation(rows, fraction, seed, stratify_by=stratify)


def mapped_columns(task: str, mapping: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, column) for every column the mapping uses, in the order of the roles."""
    pairs = []
    for role in TASK_COLUMNS.get(task, ()) + OPTIONAL_COLUMNS.get(task, ()):
        value = mapping.get(role)
        for column in (value if isinstance(value, list) else [value] if value else []):
            pairs.append((role, str(column)))
    return pairs


def system_turn_error(model_location: str, rows: list[tuple], mapping: dict[str, Any]) -> dict[str, str]:
    """The base model's chat template refusing the system turn that a mapped system or context
    column adds (some templates raise on a system role): found at submit from the first row that
    has one, as the worker would render it, instead of failing the job in the worker."""
    from app.services.prompt_preview import PreviewError, load_preview_tokenizer, render_prompt

    row = next((r for r in rows if len(r) > 2 and r[2]), None)
    if row is None:
        return {}
    try:
        tokenizer = load_preview_tokenizer(model_location)
    except PreviewError:
        return {}  # no tokenizer.json to render with here; the worker reports any problem
    try:
        render_prompt(tokenizer, row[0], row[2])
    except PreviewError as exc:
        field = "system" if mapping.get("system") else "context"
        return {field: (f"{exc}. The model's chat template takes no system turn, which the mapped {field} column "
                        "becomes. Leave that column out, or choose a base model whose template accepts one.")}
    return {}


def validation_file_errors(store: LocalArtifactStore, dataset: Dataset, validation_dataset: Dataset, task: str,
                           mapping: dict[str, Any]) -> dict[str, str]:
    """Why a dataset cannot serve as the validation file of this mapping ({} when it can)."""
    name = validation_dataset.name
    if validation_dataset.id == dataset.id:
        return {"validation_dataset": "The validation file must be another dataset than the training data. To check against "
                                      "rows of this one, choose \"hold out a share\" instead."}
    for role, column in mapped_columns(task, mapping):
        if column not in validation_dataset.columns:
            return {"validation_dataset": (
                f"The validation file {name!r} has no column named {column!r} (mapped as the {role.replace('_columns', '')}). "
                f"Its columns are: {', '.join(validation_dataset.columns)}. Upload a validation file with the same columns "
                "as the training data.")}
    if not task_rows(store, validation_dataset, task, mapping):
        needed = " and ".join(TASK_COLUMNS[task]).replace("text_columns", "text")
        return {"validation_dataset": (f"No row of the validation file {name!r} has a {needed}, so there is nothing to "
                                       "check against. Fill those columns or choose another file.")}
    return {}


def unseen_labels_error(store: LocalArtifactStore, validation_dataset: Dataset, mapping: dict[str, Any],
                        train_labels: set[str]) -> dict[str, str]:
    """A classifier's validation file with labels the training rows never show ({} when none)."""
    unseen = {label for _text, label in iter_task_rows(store, validation_dataset, "classification", mapping)} - train_labels
    if not unseen:
        return {}
    shown = ", ".join(repr(label) for label in sorted(unseen)[:5]) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
    return {"validation_dataset": (
        f"The validation file {validation_dataset.name!r} has labels the training data never shows: {shown}. A classifier cannot "
        "learn a class it has not seen, so those rows could only count as mistakes. Add training rows with those labels, "
        "or leave those rows out of the validation file.")}


def _leakage_text(task: str):
    # The prompt (instruction) or text (classification, text) identifies a row, as in the split check.
    return lambda row: row[0] if isinstance(row, (tuple, list)) else str(row)


def train_validation_rows(store: LocalArtifactStore, dataset: Dataset, task: str, mapping: dict[str, Any], *, fraction: float,
                          seed: int, validation_dataset: Dataset | None = None,
                          rows: list[tuple] | None = None) -> tuple[list, list, dict[str, Any]]:
    """The rows a job trains and validates on, and a summary of where the validation rows come from.

    With a validation file every usable row of the dataset trains and the file's usable rows
    validate; otherwise a seeded share is held out (stratified by label for classification).
    The summary carries the counts and the leakage check (validation rows also in training).
    """
    rows = task_rows(store, dataset, task, mapping) if rows is None else rows
    if validation_dataset is not None:
        train, validation = list(rows), task_rows(store, validation_dataset, task, mapping)
        summary: dict[str, Any] = {"source": "file", "dataset_id": validation_dataset.id, "dataset_name": validation_dataset.name,
                                   "dataset_sha256": validation_dataset.sha256}
    else:
        train, validation = split_task_rows(rows, task, fraction, seed)
        summary = {"source": "split", "fraction": fraction, "stratified": task == "classification"}
    leakage = validation_split.leakage_check(train, validation, text_of=_leakage_text(task))
    summary.update({"rows": len(validation), "train_rows": len(train), "leakage": leakage.as_dict()})
    return train, validation, summary


def describe_validation(summary: dict[str, Any] | None) -> str | None:
    """'file support-holdout, 40 rows' or '10% split, 22 rows' (None when not known)."""
    if not summary:
        return None
    rows = summary.get("rows")
    count = f", {rows:,} row{'s' if rows != 1 else ''}" if isinstance(rows, int) else ""
    if summary.get("source") == "file":
        return f"file {summary.get('dataset_name')}{count}"
    fraction = float(summary.get("fraction") or 0)
    stratified = ", stratified by label" if summary.get("stratified") else ""
    return f"{fraction:.0%} split{stratified}{count}"


def preview_examples(settings: Settings, store: LocalArtifactStore, dataset: Dataset, *, task: str, mapping: dict[str, Any],
                     base_model: str, max_length: int, validation_dataset: Dataset | None = None,
                     count: int = 3) -> list[Any]:
    """The first `count` usable rows exactly as the model will see them (prompt_preview.PreviewExample),
    tokenized by the base model's own tokenizer; raises PreviewError with a message for people."""
    from app.services.prompt_preview import PreviewError, load_preview_tokenizer, preview_rows

    if task not in TASK_COLUMNS:
        raise PreviewError(f"Unknown task {task!r}. Choose one of: {', '.join(TASK_COLUMNS)}.")
    mapping = clean_mapping(task, mapping)
    errors = _mapping_errors(dataset, task, mapping)
    if errors:
        raise PreviewError(next(iter(errors.values())))
    model = get_base_model(settings, base_model)
    if model is None or not model.available:
        raise PreviewError("Choose an installed base model to see rows as it will read them.")
    tokenizer = load_preview_tokenizer(model.location)
    rows = list(islice(iter_task_rows(store, dataset, task, mapping), count))
    if not rows:
        raise PreviewError("No row has every mapped column filled; check the column mapping.")
    label_names = None
    if task == "classification":  # class ids are the sorted labels of every row trained and validated on
        labels = task_labels(store, dataset, mapping)
        if validation_dataset is not None:
            labels = labels | task_labels(store, validation_dataset, mapping)
        label_names = sorted(labels)
    return preview_rows(tokenizer, task, rows, max_length, label_names)


_LABELS_CACHE: dict[tuple, frozenset[str]] = {}


def task_labels(store: LocalArtifactStore, dataset: Dataset, mapping: dict[str, Any]) -> frozenset[str]:
    """The labels of a dataset's usable classification rows; remembered per file and columns
    (stored files never change), so a form redrawn on every change does not re-read a big file."""
    key = (dataset.id, dataset.sha256, dataset_store.training_key(dataset), mapping.get("text"), mapping.get("label"))
    if key not in _LABELS_CACHE:
        if len(_LABELS_CACHE) >= 64:
            _LABELS_CACHE.pop(next(iter(_LABELS_CACHE)))
        _LABELS_CACHE[key] = frozenset(str(r[1]) for r in iter_task_rows(store, dataset, "classification", mapping))
    return _LABELS_CACHE[key]


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
    return worker_class_from_device(live[0].device, live[0].device_memory_bytes) if live else None


def estimate_for(dataset: Dataset, config: dict | None, technique: str, clean_params: dict[str, Any], task: str,
                 mapping: dict[str, Any], worker: WorkerClass | None = None, validation_rows: int | None = None) -> dict[str, Any]:
    """The pre-launch estimate as a plain dict ({"error": ...} when it cannot be made).

    `validation_rows` (a validation file's rows): every dataset row trains, those rows validate.
    """
    if config is None:
        return {"error": "Choose an installed base model to see an estimate."}
    entry = get_technique(technique)
    labels = 0
    if task == "classification" and mapping.get("label"):
        by_name = {c["name"]: c for c in (dataset.profile or {}).get("columns", [])}
        labels = int((by_name.get(mapping["label"]) or {}).get("distinct") or 2)
    bits = int(clean_params.get("bits", 0) or 0) if entry.quantized_bits else 0
    worker = worker or WorkerClass("cpu")
    n_rows = max(2, int(dataset.row_count or 0))
    if validation_rows:
        n_rows += validation_rows
        clean_params = {**clean_params, "validation_fraction": validation_rows / n_rows}
    try:
        estimate = estimate_job(config, technique, clean_params, task=task, n_rows=n_rows,
                                tokens_per_row=mean_tokens_per_row(dataset.profile, task, mapping), worker=worker,
                                num_labels=labels, quantized_bits=bits)
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        estimate = None
    if estimate is None:
        return {"error": "This model's config.json lacks the sizes an estimate needs."}
    return {**estimate.as_dict(), "worker": worker.kind, "worker_cores": worker.cores}


def _mapping_errors(dataset: Dataset, task: str, mapping: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for role in TASK_COLUMNS[task] + OPTIONAL_COLUMNS.get(task, ()):
        columns = mapping.get(role)
        if role == "text_columns":
            if not columns:
                errors[role] = "Choose at least one column that holds the text."
            for column in columns or []:
                if column not in dataset.columns:
                    errors[role] = f"The dataset has no column named {column!r}. Its columns are: {', '.join(dataset.columns)}."
            continue
        if not columns:
            if role in TASK_COLUMNS[task]:
                errors[role] = f"Choose the column that holds the {role}."
        elif columns not in dataset.columns:
            errors[role] = f"The dataset has no column named {columns!r}. Its columns are: {', '.join(dataset.columns)}."
    if not errors:
        for role, message in column_checks.column_problems(dataset, task, mapping).items():
            errors.setdefault(role, message)
    if task == "classification" and not errors and mapping["text"] == mapping["label"]:
        errors["label"] = "The text and the label must be different columns."
    return errors


class JobError(ValueError):
    """A job request that cannot be accepted, with per-field messages for the form."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def submit_job(db: Session, settings: Settings, store: LocalArtifactStore, *, workspace_id: int, user_id: int | None,
               dataset: Dataset, task: str, column_mapping: dict[str, str], base_model: str, technique: str,
               params: dict[str, Any], seed: int = 0, name: str | None = None, preset: str | None = None,
               validation_dataset: Dataset | None = None) -> Job:
    """Validate a job request and commit it as queued (the caller then sends the wake-up).

    A preset fills the parameters the request leaves out; the job keeps its estimate in result.
    `validation_dataset` (already checked to be in the workspace) replaces the held-out share.
    """
    errors: dict[str, str] = {}
    if task not in TASK_COLUMNS:
        errors["task"] = f"Unknown task {task!r}. Choose one of: {', '.join(TASK_COLUMNS)}."
    else:
        column_mapping = clean_mapping(task, column_mapping)
        errors.update(_mapping_errors(dataset, task, column_mapping))
    model = get_base_model(settings, base_model)
    if model is None:
        errors["base_model"] = f"Unknown base model {base_model!r}."
    elif not model.available:
        errors["base_model"] = f"The base model {model.label} is not installed on this server. Run `tailor provision-demo` or import it."
    clean_params: dict[str, Any] = {}
    try:
        entry = get_technique(technique)
        reason = unavailable_reason(entry, task if task in TASK_COLUMNS else None,
                                    read_model_config(model.location) if model is not None and model.available else None)
        if reason:
            errors["technique"] = reason
        if preset:
            params = {**preset_params(entry, task if task in TASK_COLUMNS else "instruction", int(dataset.row_count or 0), preset), **params}
        clean_params = validate_params(entry, params)
    except ParameterError as exc:
        errors.update(exc.errors)
    if not errors and validation_dataset is not None:
        errors.update(validation_file_errors(store, dataset, validation_dataset, task, column_mapping))
    rows: list[tuple] = []
    if not errors:
        rows = task_rows(store, dataset, task, column_mapping)
        needed = " and ".join(TASK_COLUMNS[task]).replace("text_columns", "text")
        # With a validation file every row trains, so one usable row is enough.
        min_rows = 1 if validation_dataset is not None else MIN_ROWS
        if len(rows) < min_rows:
            errors[TASK_COLUMNS[task][-1]] = (
                f"Only {len(rows)} row(s) have a {needed}; training needs at least {min_rows} "
                + ("(one to learn from, one to check against). " if min_rows > 1 else "")
                + "Check the column mapping."
            )
        elif task == "instruction":
            errors.update(system_turn_error(model.location, rows, column_mapping))
        elif task == "classification":
            labels = {row[1] for row in rows}
            if len(labels) < 2:
                errors["label"] = (f"Every usable row has the label {next(iter(labels))!r}; a classifier needs at least two "
                                   "different labels. Choose another column or add examples.")
            elif validation_dataset is not None:
                errors.update(unseen_labels_error(store, validation_dataset, column_mapping, labels))
    if not (0 <= seed < 2**31):
        errors["seed"] = "The seed must be a whole number between 0 and 2147483647."
    if errors:
        raise JobError(errors)
    worker = preferred_worker(db)
    estimate = estimate_for(dataset, read_model_config(model.location), technique, clean_params, task, column_mapping, worker,
                            validation_rows=int(validation_dataset.row_count or 0) if validation_dataset is not None else None)
    if estimate.get("fits") is False:
        raise JobError({"batch_size": (
            f"This job needs about {estimate['peak_memory_bytes'] / 2**30:.1f} GB of memory, more than the worker that would take "
            f"it has ({worker.memory_bytes / 2**30:.1f} GB). Lower the batch size or the maximum length, or choose QLoRA.")})
    *_, validation = train_validation_rows(store, dataset, task, column_mapping, fraction=float(clean_params.get("validation_fraction", 0.1)),
                                           seed=seed, validation_dataset=validation_dataset, rows=rows)
    job = Job(
        workspace_id=workspace_id, dataset_id=dataset.id, created_by_id=user_id,
        validation_dataset_id=validation_dataset.id if validation_dataset is not None else None,
        name=(name or f"{dataset.name} · {get_technique(technique).name}")[:300], task=task,
        column_mapping=column_mapping, base_model=base_model,
        technique=technique, params=clean_params, seed=seed, queue="gpu", status=JobStatus.queued,
        result={"estimate": estimate, "validation": validation},
    )
    db.add(job)
    db.flush()
    return job


def send_wakeup(db: Session, job: Job) -> None:
    """Send the job's wake-up. If the broker is down the job stays queued and the reconciler
    sends it later: the committed row, not the message, is what counts."""
    try:
        queue.send_train(job.id, job.queue)
    except Exception:  # noqa: BLE001 - any broker failure leaves a queued row for the reconciler
        log.warning("job %s: could not reach the broker; the reconciler will send it", job.id, exc_info=True)
        return
    mark_enqueued(db, job.id)
    db.commit()


def mark_enqueued(db: Session, job_id: int) -> None:
    db.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))


def request_cancel(db: Session, job: Job) -> Job:
    """Ask a job to stop: a queued job is cancelled at once, a running one stops at its next step."""
    now = utcnow()
    cancelled_now = db.execute(
        update(Job).where(Job.id == job.id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=now)
    ).rowcount
    if not cancelled_now:
        db.execute(update(Job).where(Job.id == job.id, Job.status == JobStatus.running).values(cancel_requested=True))
    db.flush()
    db.refresh(job)
    return job


def claim_job(db: Session, job_id: int, worker_name: str) -> bool:
    """queued -> running, attempt + 1. False if someone else claimed it or it is no longer queued."""
    now = utcnow()
    claimed = db.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued, Job.cancel_requested.is_(False))
        .values(status=JobStatus.running, attempt=Job.attempt + 1, worker_name=worker_name,
                started_at=now, heartbeat_at=now, error=None)
    ).rowcount
    if claimed == 1:
        job = db.execute(select(Job.attempt, Job.step).where(Job.id == job_id)).one()
        attempts.open_attempt(db, job_id, job.attempt, worker_name, job.step)
    return claimed == 1


def record_progress(db: Session, job_id: int, *, step: int, total_steps: int, epoch: float, eta_seconds: float | None,
                    loss: float | None, learning_rate: float | None, tokens_per_second: float | None,
                    validation_loss: float | None = None, grad_norm: float | None = None, memory_bytes: int | None = None) -> bool:
    """Write one metric point and the job's progress; returns True if cancellation was requested."""
    db.add(MetricPoint(job_id=job_id, step=step, epoch=epoch, loss=loss, learning_rate=learning_rate, tokens_per_second=tokens_per_second,
                       validation_loss=validation_loss, grad_norm=grad_norm, memory_bytes=memory_bytes))
    db.execute(update(Job).where(Job.id == job_id).values(step=step, total_steps=total_steps, epoch=epoch, eta_seconds=eta_seconds, heartbeat_at=utcnow()))
    return bool(db.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def heartbeat(db: Session, job_id: int) -> bool:
    """Touch the heartbeat; returns True if cancellation was requested."""
    db.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))
    return bool(db.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish_job(db: Session, job_id: int, status: JobStatus, *, error: str | None = None, result: dict | None = None) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "eta_seconds": 0 if status == JobStatus.succeeded else None}
    if error is not None:
        values["error"] = error
    if result is not None:
        values["result"] = result
    if db.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.running).values(**values)).rowcount:
        step = db.scalar(select(Job.step).where(Job.id == job_id))
        attempts.close_attempt(db, job_id, str(status), ended_step=step, reason=error)


def record_adapter(db: Session, job: Job, *, storage_key: str, size_bytes: int, trainable_parameters: int, metrics: dict) -> Adapter:
    adapter = db.scalar(select(Adapter).where(Adapter.job_id == job.id))
    if adapter is None:
        adapter = Adapter(workspace_id=job.workspace_id, job_id=job.id, name=job.name, technique=job.technique, base_model=job.base_model, storage_key=storage_key)
        db.add(adapter)
    adapter.storage_key = storage_key
    adapter.size_bytes = size_bytes
    adapter.trainable_parameters = trainable_parameters
    adapter.metrics = metrics
    db.flush()
    return adapter


def jobs_for(db: Session, workspace_id: int, limit: int = 100) -> list[Job]:
    return list(db.scalars(select(Job).where(Job.workspace_id == workspace_id).order_by(Job.id.desc()).limit(limit)))


def metric_points(db: Session, job_id: int) -> list[MetricPoint]:
    return list(db.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id).order_by(MetricPoint.step, MetricPoint.id)))


def jobs_needing_wakeup(db: Session, settings: Settings, queued_grace_seconds: int = 60) -> tuple[list[int], list[int]]:
    """Reconciliation: (queued jobs whose message may be lost, running jobs whose worker died).
    Dead running jobs are put back to queued here so they are re-sent with the others, unless
    their worker died the same way three times in a row: those end as failed."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.heartbeat_stale_seconds)
    dead = []
    for job_id in db.scalars(select(Job.id).where(Job.status == JobStatus.running, Job.heartbeat_at < stale_before)).all():
        lost = "The worker stopped responding; the job was put back in the queue."
        if not db.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.running, Job.heartbeat_at < stale_before)
                          .values(status=JobStatus.queued, error=lost)).rowcount:
            continue  # it answered after all
        step = db.scalar(select(Job.step).where(Job.id == job_id))
        history = attempts.close_attempt(db, job_id, attempts.LOST, ended_step=step, reason=lost, at=now)
        if attempts.lost_the_same_way(history):
            db.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.failed, finished_at=now, eta_seconds=None,
                                                                  error=attempts.gave_up_reason(history)))
            continue
        dead.append(job_id)
    resend_before = now - timedelta(seconds=queued_grace_seconds)
    queued = list(db.scalars(select(Job.id).where(Job.status == JobStatus.queued, (Job.enqueued_at.is_(None)) | (Job.enqueued_at < resend_before))))
    return queued, dead
