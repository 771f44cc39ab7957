"""Bake-off: one job per technique on the same data and base model, then a recommendation.

The techniques share how long and on what they train (epochs, batch, length, split, seed); each
keeps its own learning rate and settings from its preset, since a good learning rate for IA³ is
fifty times one for LoRA.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain.stats import bootstrap_difference
from app.domain.techniques import CATALOGUE
from app.models import Adapter, Dataset, Job, WorkflowState
from app.services import jobs
from app.services.artifacts import ArtifactStore
from app.services.evaluations import load_evaluation

SHARED_PARAMS = ("epochs", "batch_size", "gradient_accumulation_steps", "max_length", "validation_fraction", "max_steps")
MAX_TECHNIQUES = 6


def submit_bakeoff(
    db: Session,
    settings: Settings,
    store: ArtifactStore,
    *,
    workspace_id: int,
    user_id: int | None,
    dataset: Dataset,
    task: str,
    column_mapping: dict[str, str],
    base_model: str,
    techniques: list[str],
    params: dict[str, Any],
    seed: int = 0,
    preset: str | None = None,
    validation_dataset: Dataset | None = None,
) -> tuple[str, list[Job]]:
    """Queue one job per technique under one group id; all or none (errors name the technique)."""
    techniques = list(dict.fromkeys(techniques))
    if len(techniques) < 2:
        raise jobs.JobError({"bakeoff": "Tick at least two techniques for a bake-off."})
    if len(techniques) > MAX_TECHNIQUES:
        raise jobs.JobError({"bakeoff": f"A bake-off compares at most {MAX_TECHNIQUES} techniques."})
    shared = {k: v for k, v in params.items() if k in SHARED_PARAMS}
    group_id = uuid.uuid4().hex
    created, errors = [], {}
    for key in techniques:
        entry = CATALOGUE.get(key)
        label = entry.name if entry else key
        try:
            job = jobs.submit_job(
                db,
                settings,
                store,
                workspace_id=workspace_id,
                user_id=user_id,
                dataset=dataset,
                task=task,
                column_mapping=column_mapping,
                base_model=base_model,
                technique=key,
                params=shared,
                seed=seed,
                name=f"{dataset.name} · {label} (bake-off)",
                preset=preset,
                validation_dataset=validation_dataset,
            )
        except jobs.JobError as exc:
            errors.update(
                {
                    name
                    if name in ("prompt", "response", "text", "label", "base_model", "task", "validation_dataset")
                    else "bakeoff": f"{label}: {message}"
                    for name, message in exc.errors.items()
                }
            )
            continue
        job.group_id = group_id
        created.append(job)
    if errors:
        raise jobs.JobError(errors)
    db.flush()
    return group_id, created


@dataclass
class GroupState:
    group_id: str
    jobs: list[Job]
    adapters: dict[int, Adapter]  # job id -> adapter

    @property
    def training_done(self) -> bool:
        return all(j.is_finished for j in self.jobs)

    @property
    def evaluations_done(self) -> bool:
        return all(a.evaluation_state in (WorkflowState.done, WorkflowState.failed) for a in self.adapters.values())

    @property
    def finished(self) -> bool:
        return self.training_done and self.evaluations_done

    @property
    def adapter_ids(self) -> list[int]:
        return [self.adapters[j.id].id for j in self.jobs if j.id in self.adapters]


def group_state(db: Session, workspace_id: int, group_id: str) -> GroupState | None:
    group_jobs = list(db.scalars(select(Job).where(Job.group_id == group_id, Job.workspace_id == workspace_id).order_by(Job.id)))
    if not group_jobs:
        return None
    found = db.scalars(select(Adapter).where(Adapter.job_id.in_([j.id for j in group_jobs])))
    adapters = {a.job_id: a for a in found if a.job_id is not None}  # always set: selected by job id
    return GroupState(group_id, group_jobs, adapters)


def _size_ratio(big: int, small: int) -> str:
    if not big or not small or small >= big:
        return ""
    return f" at 1/{round(big / small)} of the size"


def recommend(store: ArtifactStore, state: GroupState) -> str:
    """'LoRA scored best; IA³ came within noise at 1/40 of the size.' — from ROUGE-L (or token F1,
    exact match, accuracy for classifiers, or validation loss when nothing was evaluated)."""
    candidates = []
    for job in state.jobs:
        adapter = state.adapters.get(job.id)
        if adapter is None:
            continue
        evaluation = load_evaluation(store, adapter.id)
        scores = (evaluation or {}).get("scores", {}).get("adapter", {})
        candidates.append((job, adapter, scores))
    if not candidates:
        failed = [j for j in state.jobs if j.status == "failed"]
        return "No technique produced an adapter." + (f" {failed[0].name} failed: {failed[0].error}" if failed else "")
    metric = next((m for m in ("rouge_l", "token_f1", "exact_match", "accuracy") if all(m in s for _, _, s in candidates)), None)
    name = {c[0].id: CATALOGUE[c[0].technique].name if c[0].technique in CATALOGUE else c[0].technique for c in candidates}
    if metric is None:
        ranked = sorted(candidates, key=lambda c: (c[0].result or {}).get("validation_loss") or float("inf"))
        best = ranked[0]
        return (
            f"{name[best[0].id]} reached the lowest validation loss. Evaluate the adapters for a comparison on "
            "held-out rows (it runs by itself after each job unless TAILOR_AUTO_EVALUATE is off)."
        )
    mean = {c[0].id: sum(c[2][metric]) / len(c[2][metric]) for c in candidates}
    best = max(candidates, key=lambda c: mean[c[0].id])
    parts = [f"{name[best[0].id]} scored best on {metric.replace('_', '-').replace('rouge-l', 'ROUGE-L')}"]
    for job, adapter, scores in candidates:
        if job is best[0]:
            continue
        diff = bootstrap_difference(best[2][metric], scores[metric]) if len(scores[metric]) == len(best[2][metric]) else None
        if diff is not None and diff.high >= 0:
            parts.append(f"{name[job.id]} came within noise{_size_ratio(best[1].size_bytes, adapter.size_bytes)}")
        else:
            parts.append(f"{name[job.id]} was clearly behind")
    failed = [j for j in state.jobs if j.status == "failed"]
    sentence = "; ".join(parts) + "."
    if failed:
        sentence += " " + ", ".join(CATALOGUE[j.technique].name if j.technique in CATALOGUE else j.technique for j in failed) + " failed."
    return sentence
