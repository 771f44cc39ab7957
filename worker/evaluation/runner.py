"""Evaluate one adapter on its job's held-out rows, next to the base model (whose answers are
cached per base model and split, so every adapter is compared with the same base answers).

Results: a JSON artifact with every row (prompt, reference, base answer, adapter answer, scores;
for classification the text, true label, baseline label and predicted label, plus the predictions)
and a summary with 95% bootstrap intervals in `adapter.metrics["evaluation"]`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager, nullcontext

from app.base_models import get_base_model
from app.config import get_settings
from app.db import session_scope
from app.domain.evaluation_costs import EVAL_CONTINUATION_TOKENS, EVAL_GENERATION_ROWS, EVAL_LOSS_ROWS, EVAL_NEW_TOKENS, generation_rows
from app.domain.stats import bootstrap_mean, bootstrap_ratio, exponentiated
from app.domain.task_kinds import DEFAULT_TASK, get_task_kind
from app.models import Adapter, Job
from app.services import adapter_workflows
from app.services.adapter_workflows import EVALUATION
from app.services.artifacts import ArtifactStore, get_artifact_store
from app.services.evaluations import evaluation_key, record_summary
from worker.evaluation.metrics import score_generations
from worker.evaluation.parent_answers import add_parent_answers
from worker.rows import RowGone

log = logging.getLogger("tailor.evaluation")

# One place for what the evaluation does: the estimates count the same (app/domain/estimates.py).
MAX_EVAL_ROWS = EVAL_GENERATION_ROWS
MAX_LOSS_ROWS = EVAL_LOSS_ROWS
MAX_NEW_TOKENS = EVAL_NEW_TOKENS
MAX_CONTINUATION_TOKENS = EVAL_CONTINUATION_TOKENS


def base_answers_key(base_model: str, prompts: list[str], max_new_tokens: int, task: str = "instruction") -> str:
    # Continuations are generated from raw text, answers from the rendered prompt: never share a cache.
    identity = [base_model, max_new_tokens, prompts] + ([task] if task != "instruction" else [])
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]
    return f"evaluations/base/{base_model}-{digest}.json"


def _pairs(rows) -> list[tuple[str, str]]:
    pairs = []
    for row in rows:
        if isinstance(row, dict):
            pairs.append((str(row.get("prompt", "")), str(row.get("response", ""))))
        else:
            pairs.append((str(row[0]), str(row[1])))
    return pairs


def summarise(scores: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {metric: bootstrap_mean(values).as_dict() for metric, values in scores.items() if values}


def _write_json(store, key: str, payload: dict) -> None:
    tmp = store.temp_path(".json")
    tmp.write_text(json.dumps(payload, ensure_ascii=False))
    store.put_file(key, tmp)


def evaluate_adapter(adapter_id: int, max_rows: int = MAX_EVAL_ROWS) -> dict:
    """Score, store and record; returns the summary written into the adapter's metrics.

    instruction and text jobs: generated answers (text: continuations of held-out texts) next to
    the base model's; classification: accuracy, macro-F1 and a confusion matrix next to the
    majority-class baseline; every task: held-out loss (and perplexity) with intervals.
    """
    from worker.job_runner import build_spec

    store = get_artifact_store()
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        job = db.get(Job, adapter.job_id) if adapter and adapter.job_id else None
        if adapter is None or job is None:
            raise ValueError(f"adapter {adapter_id} has no training job to evaluate against")
        task = job.task or DEFAULT_TASK
        spec = build_spec(job, job.dataset, store.temp_path())
        base = get_base_model(get_settings(), job.base_model)
        if base is None:  # build_spec found it; only a catalogue change in between gets here
            raise ValueError(f"The base model {job.base_model!r} is not installed on this worker.")
        adapter_dir = store.path(adapter.storage_key)
        base_model_key = job.base_model
        parent_id = job.parent_adapter_id  # preference tuning: also answered by the adapter it continued
    started = time.perf_counter()

    import torch

    from worker.training.spec import resolve_params

    max_length = int(resolve_params(spec.technique, spec.params)["max_length"])
    kind = get_task_kind(task)
    label_names = _label_names(adapter_dir) if kind.has_labels else None
    model, tokenizer, full_base_dir = _load_for_evaluation(adapter_dir, base.location, task, label_names)
    max_rows = min(max_rows, generation_rows(model.device.type))  # a CPU answers fewer rows (each costs seconds)

    def base_view():
        return without_adapter(model, full_base_dir)  # noqa: F821 - never called after the `del model` below

    if label_names is not None:  # kind.has_labels
        from worker.evaluation.classification import predict_labels, score_labels

        texts, gold, predicted = predict_labels(model, tokenizer, spec.validation_rows, label_names, max_length)
        result = score_labels(texts, gold, predicted, [str(kind.label_of(r)) for r in spec.train_rows], label_names)
    else:
        references = kind.reference_rows(spec.validation_rows) if kind.reference_rows else spec.validation_rows
        result = _evaluate_generations(model, base_view, tokenizer, store, task, base_model_key, references, max_rows)
        add_parent_answers(result, model, tokenizer, spec.parent_adapter_dir, parent_id, MAX_NEW_TOKENS)
    _add_losses(result, model, base_view, tokenizer, task, spec.validation_rows, max_length, label_names, cache=(store, base_model_key))
    del model
    torch.set_grad_enabled(True)

    summary = result["summary"]
    summary["seconds"] = round(time.perf_counter() - started, 1)
    # the base model's side (its answers and losses; 0 when both came from the cache), for the estimates
    summary["base_seconds"] = round(summary.get("base_seconds", 0.0), 1)
    _write_json(store, evaluation_key(adapter_id), result)
    with session_scope() as db:
        adapter = record_summary(db, adapter_id, summary)
        if adapter is None:
            raise RowGone(Adapter, adapter_id)
        key, technique = adapter.storage_key, adapter.technique
    _card_with_evaluation(store, key, technique, base.public_name, summary)  # the zip names the public id
    log.info("adapter %s: evaluated on %d rows in %.1fs", adapter_id, summary["rows"], summary["seconds"])
    return summary


def _load_for_evaluation(adapter_dir, base_dir: str, task: str, label_names):
    """(model, tokenizer, base folder to load beside it or None): the base with the adapter plugged
    in, or for a full fine-tune (a whole model in adapter_dir) that model alone."""
    from peft import PeftModel

    from worker.training.loading import load_base_model

    if (adapter_dir / "adapter_config.json").is_file():
        model, tokenizer = load_base_model(base_dir, task=task, label_names=label_names)
        return PeftModel.from_pretrained(model, str(adapter_dir)).eval(), tokenizer, None
    model, tokenizer = load_base_model(str(adapter_dir), task=task, label_names=label_names)
    return model.eval(), tokenizer, base_dir


@contextmanager
def without_adapter(model, full_base_dir: str | None = None):
    """The base model: the adapter switched off, or for a full fine-tune the base loaded beside it."""
    if full_base_dir is None:
        with model.disable_adapter():
            yield model
        return
    from worker.training.loading import load_base_model

    base, _ = load_base_model(full_base_dir)
    try:
        yield base.eval()
    finally:
        del base


def _label_names(adapter_dir) -> list[str]:
    from worker.training.saving import LABELS_FILE

    id2label = json.loads((adapter_dir / LABELS_FILE).read_text())["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


def _evaluate_generations(model, base_view, tokenizer, store, task: str, base_model_key: str, validation_rows, max_rows: int) -> dict:
    """Answers (or continuations) of the adapter and of the base model, scored against the reference."""
    from worker.evaluation.continuations import continuation_pairs
    from worker.evaluation.generate import generate_answers
    from worker.evaluation.semantic import semantic_similarity

    continuation = not get_task_kind(task).prompted  # texts are continued; prompts are answered
    pairs = (continuation_pairs(validation_rows) if continuation else _pairs(validation_rows))[:max_rows]
    prompts, references = [p for p, _ in pairs], [r for _, r in pairs]
    max_new_tokens = MAX_CONTINUATION_TOKENS if continuation else MAX_NEW_TOKENS
    base_key = base_answers_key(base_model_key, prompts, max_new_tokens, task)
    base_seconds = 0.0
    if store.exists(base_key):
        base_answers = json.loads(store.path(base_key).read_text())["answers"]
    else:
        started = time.perf_counter()
        with base_view() as base_model:
            base_answers = generate_answers(base_model, tokenizer, prompts, max_new_tokens=max_new_tokens, continuation=continuation)
        _write_json(store, base_key, {"base_model": base_model_key, "answers": base_answers})
        base_seconds = time.perf_counter() - started
    adapter_answers = generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens, continuation=continuation)
    adapter_scores = score_generations(adapter_answers, references)
    base_scores = score_generations(base_answers, references)
    for answers, scores in ((adapter_answers, adapter_scores), (base_answers, base_scores)):
        similarity = semantic_similarity(answers, references)
        if similarity is not None:
            scores["semantic_similarity"] = similarity
    return {
        "summary": {
            "rows": len(pairs),
            "task": task,
            "adapter": summarise(adapter_scores),
            "base": summarise(base_scores),
            "base_seconds": base_seconds,
        },
        "rows": [
            {"prompt": p, "reference": r, "base": b, "adapter": a} for p, r, b, a in zip(prompts, references, base_answers, adapter_answers)
        ],
        "scores": {"adapter": adapter_scores, "base": base_scores},
    }


def base_losses_key(base_model: str, task: str, max_length: int, rows: list) -> str:
    digest = hashlib.sha256(
        json.dumps([base_model, task, max_length, [list(r) if isinstance(r, (tuple, list)) else r for r in rows]]).encode()
    ).hexdigest()[:24]
    return f"evaluations/base-losses/{base_model}-{digest}.json"


def _add_losses(
    result: dict,
    model,
    base_view,
    tokenizer,
    task: str,
    validation_rows,
    max_length: int,
    label_names,
    cache: tuple[ArtifactStore, str] | None = None,
) -> None:
    """Held-out loss per token (perplexity for language tasks) with intervals over the examples, for
    the adapter and, where its head is real (not classification), the base model: computed once
    per base model and rows, like its answers, when `cache` is (store, base model key)."""
    from worker.evaluation.losses import example_losses
    from worker.training.data import pad_token_id, tokenize_for_task

    rows = list(validation_rows)[:MAX_LOSS_ROWS]
    examples = tokenize_for_task(tokenizer, task, rows, max_length, label_names).examples
    if not examples:
        return
    sides = {"adapter": example_losses(model, examples, pad_token_id(tokenizer))}
    generative = get_task_kind(task).generative
    if generative:
        key = base_losses_key(cache[1], task, max_length, rows) if cache else None
        if cache and key and cache[0].exists(key):
            sides["base"] = [tuple(pair) for pair in json.loads(cache[0].path(key).read_text())["losses"]]
        else:
            started = time.perf_counter()
            with base_view() as base_model:
                sides["base"] = example_losses(base_model, examples, pad_token_id(tokenizer))
            if cache and key:
                _write_json(cache[0], key, {"base_model": cache[1], "losses": [list(pair) for pair in sides["base"]]})
            result["summary"]["base_seconds"] = result["summary"].get("base_seconds", 0.0) + time.perf_counter() - started
    result["summary"]["loss_examples"] = len(examples)
    for side, losses in sides.items():
        kept = [(total, n) for total, n in losses if n > 0]
        loss = bootstrap_ratio([t for t, _ in kept], [n for _, n in kept])
        metrics = result["summary"].setdefault(side, {})
        metrics["validation_loss"] = loss.as_dict()
        if generative:  # a classifier's loss is over labels, not tokens: no perplexity
            metrics["perplexity"] = exponentiated(loss).as_dict()
        result["scores"].setdefault(side, {})["validation_loss"] = [t / n for t, n in kept]


def run_evaluation(adapter_id: int) -> str:
    """The task's body: evaluate, recording the state (and a plain reason on failure) on the adapter.
    A wake-up for an evaluation that is running already (a duplicate) does nothing."""
    from app.logs import job_log_context

    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        if adapter is None or not adapter_workflows.start(db, adapter_id, EVALUATION):
            log.info("adapter %s: evaluation not started (unknown adapter, or running already)", adapter_id)
            return "not-started"
        job_id = adapter.job_id
    try:
        with job_log_context(job_id) if job_id is not None else nullcontext():  # an adapter may outlive its job
            evaluate_adapter(adapter_id)
    except Exception as exc:  # noqa: BLE001 - the adapter stays usable; the page shows why evaluation failed
        log.exception("adapter %s: evaluation failed", adapter_id)
        with session_scope() as db:
            adapter_workflows.finish(db, adapter_id, EVALUATION, f"Evaluation failed: {type(exc).__name__}: {exc}"[:500])
        return "failed"
    with session_scope() as db:
        adapter_workflows.finish(db, adapter_id, EVALUATION)
    return "done"


def _card_with_evaluation(store, key: str, technique: str, base_model: str, summary: dict) -> None:
    """The downloadable zip's model card gains the metrics with their intervals."""
    import shutil

    from worker.packaging import refresh_model_card

    work = store.temp_path("-card")
    shutil.copytree(store.path(key), work)
    try:
        refresh_model_card(work, technique, base_model, summary)
        store.put_file(key, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
