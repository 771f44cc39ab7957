"""Evaluate one adapter on its job's held-out rows, next to the base model (whose answers are
cached per base model and split, so every adapter is compared with the same base answers).

Results: a JSON artifact with every row (prompt, reference, base answer, adapter answer, scores)
and a summary with 95% bootstrap intervals in `adapter.metrics["evaluation"]`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from app.base_models import get_base_model
from app.config import get_settings
from app.db import session_scope
from app.models import Adapter, Job
from app.services.artifacts import get_artifact_store
from app.services.evaluations import evaluation_key
from app.services.stats import bootstrap_mean
from worker.evaluation.metrics import score_generations

log = logging.getLogger("tailor.evaluation")

MAX_EVAL_ROWS = 40
MAX_NEW_TOKENS = 96


def base_answers_key(base_model: str, prompts: list[str], max_new_tokens: int) -> str:
    digest = hashlib.sha256(json.dumps([base_model, max_new_tokens, prompts]).encode()).hexdigest()[:24]
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
    """Generate, score and store; returns the summary written into the adapter's metrics."""
    from worker.job_runner import build_spec

    store = get_artifact_store()
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        job = db.get(Job, adapter.job_id) if adapter and adapter.job_id else None
        if adapter is None or job is None:
            raise ValueError(f"adapter {adapter_id} has no training job to evaluate against")
        if (job.task or "instruction") != "instruction":
            return {}
        spec = build_spec(job, job.dataset, store.temp_path())
        base = get_base_model(get_settings(), job.base_model)
        adapter_dir = store.path(adapter.storage_key)
        base_model_key = job.base_model
    pairs = _pairs(spec.validation_rows)[:max_rows]
    prompts, references = [p for p, _ in pairs], [r for _, r in pairs]
    started = time.perf_counter()

    import torch
    from peft import PeftModel

    from worker.evaluation.generate import generate_answers
    from worker.evaluation.semantic import semantic_similarity
    from worker.training.loading import load_base_model

    model, tokenizer = load_base_model(base.location)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    base_key = base_answers_key(base_model_key, prompts, MAX_NEW_TOKENS)
    if store.exists(base_key):
        base_answers = json.loads(store.path(base_key).read_text())["answers"]
    else:
        with model.disable_adapter():
            base_answers = generate_answers(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS)
        _write_json(store, base_key, {"base_model": base_model_key, "answers": base_answers})
    adapter_answers = generate_answers(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS)
    del model
    torch.set_grad_enabled(True)

    adapter_scores = score_generations(adapter_answers, references)
    base_scores = score_generations(base_answers, references)
    for answers, scores in ((adapter_answers, adapter_scores), (base_answers, base_scores)):
        similarity = semantic_similarity(answers, references)
        if similarity is not None:
            scores["semantic_similarity"] = similarity
    summary = {"rows": len(pairs), "adapter": summarise(adapter_scores), "base": summarise(base_scores),
               "seconds": round(time.perf_counter() - started, 1)}
    _write_json(store, evaluation_key(adapter_id), {
        "summary": summary,
        "rows": [{"prompt": p, "reference": r, "base": b, "adapter": a} for p, r, b, a in zip(prompts, references, base_answers, adapter_answers)],
        "scores": {"adapter": adapter_scores, "base": base_scores},
    })
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        adapter.metrics = {**(adapter.metrics or {}), "evaluation": summary}
        key, technique = adapter.storage_key, adapter.technique
    _card_with_evaluation(store, key, technique, base_model_key, summary)
    log.info("adapter %s: evaluated on %d rows in %.1fs", adapter_id, len(pairs), summary["seconds"])
    return summary


def run_evaluation(adapter_id: int) -> str:
    """The task's body: evaluate, recording the state (and a plain reason on failure) on the adapter."""
    from app.logs import job_log_context

    _set_state(adapter_id, "running")
    try:
        with session_scope() as db:
            job_id = db.get(Adapter, adapter_id).job_id
        with job_log_context(job_id):
            evaluate_adapter(adapter_id)
    except Exception as exc:  # noqa: BLE001 - the adapter stays usable; the page shows why evaluation failed
        log.exception("adapter %s: evaluation failed", adapter_id)
        _set_state(adapter_id, "failed", f"Evaluation failed: {type(exc).__name__}: {exc}"[:500])
        return "failed"
    _set_state(adapter_id, "done")
    return "done"


def _set_state(adapter_id: int, state: str, error: str | None = None) -> None:
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        if adapter is not None:
            adapter.metrics = {**(adapter.metrics or {}), "evaluation_state": state, "evaluation_error": error}


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
