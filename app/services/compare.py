"""The comparison of several adapters: one plain dict that the page, its JSON twin and the CSV
export all render, so the three never disagree."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.label_metrics import macro_f1_difference
from app.domain.stats import LOWER_IS_BETTER_METRICS, METRIC_NAMES, compare_in_words
from app.domain.task_kinds import get_task_kind
from app.models import Adapter, Job, MetricPoint
from app.services.artifacts import ArtifactStore
from app.services.evaluations import load_evaluation
from app.services.preference_compare import preference_rows, preference_verdicts
from app.services.tabular_formats import neutralise_formula

# Higher is better for every evaluation metric; lower for losses and costs.
LOWER_IS_BETTER = {"validation_loss", "perplexity", "size_bytes", "train_seconds", "peak_memory_bytes", "trainable_parameters"}
MAX_SIDE_BY_SIDE = 12


class CompareError(ValueError):
    """A comparison that cannot be built, worded for the person who asked."""


def _owned_adapters(db: Session, workspace_id: int, ids: list[int]) -> list[Adapter]:
    adapters = list(db.scalars(select(Adapter).where(Adapter.id.in_(ids), Adapter.workspace_id == workspace_id)))
    found = {a.id for a in adapters}
    missing = [i for i in ids if i not in found]
    if missing:
        raise CompareError(f"There is no adapter {', '.join(map(str, missing))} in your workspace.")
    return sorted(adapters, key=lambda a: ids.index(a.id))


def _row(adapter: Adapter, job: Job | None, evaluation: dict | None) -> dict[str, Any]:
    result = (job.result if job else None) or {}
    validation_loss = result.get("validation_loss")
    train_seconds = result.get("train_seconds")
    total = result.get("total_parameters") or 0
    row: dict[str, Any] = {
        "adapter_id": adapter.id,
        "name": adapter.name,
        "technique": adapter.technique,
        "base_model": adapter.base_model,
        "task": job.task if job else None,
        "dataset_id": job.dataset_id if job else None,
        "trainable_parameters": adapter.trainable_parameters,
        "trainable_share": (adapter.trainable_parameters / total) if total else None,
        "size_bytes": adapter.size_bytes,
        "train_seconds": train_seconds,
        "peak_memory_bytes": result.get("peak_memory_bytes"),
        "tokens_per_second": (result.get("tokens_seen") or 0) / train_seconds if train_seconds else None,
        "validation_loss": validation_loss,
        "perplexity": math.exp(validation_loss) if validation_loss is not None and validation_loss < 50 else None,
        "metrics": (evaluation or {}).get("summary", {}).get("adapter", {}),
        "confusion": (evaluation or {}).get("summary", {}).get("confusion"),  # classification only
        "evaluated": evaluation is not None,
    }
    return row


def _loss_curves(db: Session, jobs: dict[int, Job | None], adapters: list[Adapter]) -> list[dict[str, Any]]:
    curves = []
    for adapter in adapters:
        if adapter.job_id is None:
            continue
        points = db.execute(
            select(MetricPoint.step, MetricPoint.loss).where(MetricPoint.job_id == adapter.job_id).order_by(MetricPoint.step)
        ).all()
        curves.append(
            {
                "adapter_id": adapter.id,
                "name": adapter.name,
                "kind": "train",
                "points": [{"step": s, "loss": loss} for s, loss in points if loss is not None],
            }
        )
    return curves


def _param_diff(jobs: list[Job | None]) -> dict[str, list[Any]]:
    """Only the settings that differ between the adapters (technique included)."""
    settings = [{"technique": j.technique, "seed": j.seed, **(j.params or {})} if j else {} for j in jobs]
    keys = sorted({k for s in settings for k in s})
    return {k: [s.get(k) for s in settings] for k in keys if len({repr(s.get(k)) for s in settings}) > 1}


def _best(rows: list[dict[str, Any]]) -> dict[str, int]:
    """For each comparable number, the adapter id with the best value."""
    best: dict[str, int] = {}
    columns = ["validation_loss", "perplexity", "size_bytes", "train_seconds", "peak_memory_bytes", "tokens_per_second"]
    for column in columns:
        candidates = [(r[column], r["adapter_id"]) for r in rows if r.get(column) is not None]
        if len(candidates) > 1:
            pick = min if column in LOWER_IS_BETTER else max
            best[column] = pick(candidates)[1]
    metrics = {m for r in rows for m in r["metrics"]}
    for metric in metrics:
        candidates = [(r["metrics"][metric]["value"], r["adapter_id"]) for r in rows if metric in r["metrics"]]
        if len(candidates) > 1:
            best[f"metric:{metric}"] = (min if metric in LOWER_IS_BETTER_METRICS else max)(candidates)[1]
    return best


def base_label(evaluation: dict | None) -> str:
    """What the adapters are measured against: the base model, or for a classifier (whose head
    starts untrained, so the base model alone would guess) the majority class."""
    summary = (evaluation or {}).get("summary", {})
    if summary.get("base_kind") == "majority_class":
        return f"the majority-class baseline (always \u201c{summary.get('baseline_label')}\u201d)"
    return "the base model"


def _label_differences(a: dict, b: dict, a_side: str = "adapter") -> dict:
    """Paired macro-F1 difference (b - a) for classifiers scored on the same rows; macro-F1 is not a
    mean over rows, so it is resampled here rather than from per-row scores."""
    pa, pb = a.get("predictions"), b.get("predictions")
    if not pa or not pb or pa["gold"] != pb["gold"]:
        return {}
    return {"macro_f1": macro_f1_difference(pa[a_side], pb["adapter"], pa["gold"])}


def _paired(scores_a: dict, scores_b: dict) -> dict:
    return {m: (scores_a[m], scores_b[m]) for m in scores_b if m in scores_a and len(scores_a[m]) == len(scores_b[m])}


def _key_metric(rows: list[dict[str, Any]]) -> str | None:
    for metric in ("rouge_l", "macro_f1", "accuracy", "validation_loss"):
        if all(metric in r["metrics"] for r in rows):
            return metric
    return None


def _verdicts(rows: list[dict[str, Any]], evaluations: dict[int, dict]) -> list[str]:
    """Words comparing each adapter with the base model (or baseline), and the leader with each runner-up."""
    sentences = []
    scored = [r for r in rows if evaluations.get(r["adapter_id"])]
    for row in scored:
        evaluation = evaluations[row["adapter_id"]]
        scores = evaluation["scores"]
        shared = _paired(scores.get("base", {}), scores["adapter"])
        differences = _label_differences(evaluation, evaluation, a_side="base")
        if shared or differences:
            sentences.append(compare_in_words(base_label(evaluation), row["name"], shared, differences))
    if len(scored) > 1:
        key_metric = _key_metric(scored)
        if key_metric:
            pick = min if key_metric in LOWER_IS_BETTER_METRICS else max
            leader = pick(scored, key=lambda r: r["metrics"][key_metric]["value"])
            lead = evaluations[leader["adapter_id"]]
            for other in scored:
                if other is leader:
                    continue
                evaluation = evaluations[other["adapter_id"]]
                shared = _paired(evaluation["scores"]["adapter"], lead["scores"]["adapter"])
                differences = _label_differences(evaluation, lead)
                if shared or differences:
                    words = compare_in_words(other["name"], leader["name"], shared, differences)
                    size_note = ""
                    if other["size_bytes"] and leader["size_bytes"] and other["size_bytes"] < leader["size_bytes"]:
                        size_note = f" {other['name']} is 1/{max(1, round(leader['size_bytes'] / other['size_bytes']))} of the size."
                    sentences.append(words + size_note)
    return sentences


def _named_win_rates(db: Session, workspace_id: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from app.services.reviews import win_rates

    names = {f"adapter:{r['adapter_id']}": r["name"] for r in rows} | {"base": "the base model"}
    return [
        {**w, "name": names.get(w["target"], w["target"]), "opponent_name": names.get(w["opponent"], "another adapter")}
        for w in win_rates(db, workspace_id, [r["adapter_id"] for r in rows])
    ]


def build_comparison(db: Session, store: ArtifactStore, workspace_id: int, ids: list[int]) -> dict[str, Any]:
    ids = list(dict.fromkeys(ids))
    if len(ids) < 1:
        raise CompareError("Pick at least one adapter to compare.")
    adapters = _owned_adapters(db, workspace_id, ids)
    jobs = {a.id: (db.get(Job, a.job_id) if a.job_id else None) for a in adapters}
    tasks = {j.task for j in jobs.values() if j}
    # Prompted tasks (instruction, preference, feedback) all answer prompts: an adapter tuned on
    # preferences compares with the instruction adapter it continued from.
    if len({"prompted" if get_task_kind(t).prompted else t for t in tasks}) > 1:
        raise CompareError("These adapters were trained for different tasks; compare adapters of one task at a time.")
    evaluations = {a.id: load_evaluation(store, a.id) for a in adapters}
    rows = [_row(a, jobs[a.id], evaluations[a.id]) for a in adapters]
    preference = preference_rows(adapters, jobs)
    base_metrics: dict[str, Any] = next((e["summary"]["base"] for e in evaluations.values() if e), {})
    side_by_side = []
    first = next((e for e in evaluations.values() if e), None)
    if first:
        for index, item in enumerate(first["rows"][:MAX_SIDE_BY_SIDE]):
            answers = []
            for adapter in adapters:
                evaluation = evaluations[adapter.id]
                evaluated_rows = evaluation["rows"] if evaluation else []
                same_prompt = index < len(evaluated_rows) and evaluated_rows[index]["prompt"] == item["prompt"]
                answers.append(
                    {
                        "adapter_id": adapter.id,
                        "name": adapter.name,
                        "answer": evaluated_rows[index]["adapter"] if same_prompt else None,
                    }
                )
            side_by_side.append({"prompt": item["prompt"], "reference": item["reference"], "base": item["base"], "answers": answers})
    return {
        "adapters": rows,
        "base_metrics": base_metrics,
        "base_label": base_label(first),
        "task": next(iter(sorted(tasks)), None),
        "best": _best(rows),
        "parameter_diff": _param_diff([jobs[a.id] for a in adapters]),
        "loss_curves": _loss_curves(db, jobs, adapters),
        "side_by_side": side_by_side,
        "verdicts": _verdicts(rows, {k: v for k, v in evaluations.items() if v}) + preference_verdicts(preference),
        "blind_review": _named_win_rates(db, workspace_id, rows),
        "metric_names": METRIC_NAMES,
        "preference": preference,  # reward accuracy and margin of preference-tuned adapters
    }


def comparison_csv(comparison: dict[str, Any]) -> str:
    """The summary table as CSV; cells that a spreadsheet would run as formulas are quoted with '."""
    metrics = sorted({m for r in comparison["adapters"] for m in r["metrics"]})
    out = io.StringIO()
    writer = csv.writer(out)
    head = [
        "adapter_id",
        "name",
        "technique",
        "base_model",
        "trainable_parameters",
        "size_bytes",
        "train_seconds",
        "peak_memory_bytes",
        "tokens_per_second",
        "validation_loss",
        "perplexity",
    ]
    confusion = any(r.get("confusion") for r in comparison["adapters"])
    names = head + [f"{m}{suffix}" for m in metrics for suffix in ("", "_low", "_high")] + (["confusion_matrix"] if confusion else [])
    writer.writerow([neutralise_formula(name) for name in names])
    for row in comparison["adapters"]:
        cells = [row[h] for h in head]
        for m in metrics:
            value = row["metrics"].get(m)
            cells += [value["value"], value["low"], value["high"]] if value else ["", "", ""]
        if confusion:  # {"labels": [...], "matrix": [[true label i predicted as j]]} as JSON
            cells.append(json.dumps(row["confusion"], ensure_ascii=False) if row.get("confusion") else "")
        writer.writerow([neutralise_formula(c) if isinstance(c, str) else c for c in cells])
    return out.getvalue()
