"""Preference datasets from what happened inside Tailor, as ordinary datasets (stored, versioned by
their content, profiled and scanned for personal data by the normal ingest):

- blind review votes: the winner's answer is chosen, the loser's rejected, ties left out — for one
  adapter, a comparison (its adapters and the base model), or the whole workspace;
- corrections written in the playground: the prompt, the model's answer (rejected) and the
  correction (chosen);
- feedback rows (prompt, answer, good/bad) from any source: `feedback_dataset`, which the serving
  request log feeds (app/services/request_log.py: each served answer with a reviewer's thumbs up or
  down becomes one row).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Correction, Dataset, ReviewItem
from app.services.artifacts import ArtifactStore
from app.services.dataset_ingest import ingest_received

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "chosen_by", "rejected_by")
FEEDBACK_COLUMNS = ("prompt", "answer", "feedback")
CORRECTION_MAX_CHARS = 20_000


class PreferenceDataError(ValueError):
    """Nothing to build a dataset from, or a correction that cannot be saved; worded for people."""


@dataclass(frozen=True)
class VoteScope:
    """Which votes: those involving any of `adapter_ids` (and, for a comparison, only pairs whose
    both sides are among them or the base model); all of the workspace when adapter_ids is empty."""

    adapter_ids: tuple[int, ...] = ()
    comparison: bool = False

    def wants(self, item: ReviewItem) -> bool:
        if not self.adapter_ids:
            return True
        targets = {f"adapter:{i}" for i in self.adapter_ids}
        sides = {item.left_target, item.right_target}
        if self.comparison:
            return bool(sides & targets) and sides <= targets | {"base"}
        return bool(sides & targets)

    def describe(self) -> str:
        if not self.adapter_ids:
            return "the whole workspace"
        names = ", ".join(f"#{i}" for i in self.adapter_ids)
        return f"the comparison of adapters {names}" if self.comparison else f"adapter {names}"


def _voted(db: Session, workspace_id: int, scope: VoteScope) -> list[ReviewItem]:
    items = db.scalars(
        select(ReviewItem).where(ReviewItem.workspace_id == workspace_id, ReviewItem.choice.is_not(None)).order_by(ReviewItem.id)
    )
    return [item for item in items if scope.wants(item)]


def vote_pairs(db: Session, workspace_id: int, scope: VoteScope) -> list[dict[str, str]]:
    """One row per decided vote (ties left out, as are votes whose two answers are the same text)."""
    rows = []
    for item in _voted(db, workspace_id, scope):
        if item.choice not in ("left", "right") or item.left_answer.strip() == item.right_answer.strip():
            continue
        left = (item.left_answer, item.left_target)
        right = (item.right_answer, item.right_target)
        (chosen, chosen_by), (rejected, rejected_by) = (left, right) if item.choice == "left" else (right, left)
        rows.append({"prompt": item.prompt, "chosen": chosen, "rejected": rejected, "chosen_by": chosen_by, "rejected_by": rejected_by})
    return rows


def vote_counts(db: Session, workspace_id: int, scope: VoteScope) -> dict[str, int]:
    """How many pairs the votes yield, and how many were left out as ties."""
    items = _voted(db, workspace_id, scope)
    pairs = len(vote_pairs(db, workspace_id, scope))
    return {"votes": len(items), "pairs": pairs, "ties": sum(1 for i in items if i.choice == "tie"), "left_out": len(items) - pairs}


def _ingest_rows(
    db: Session, store: ArtifactStore, *, workspace_id: int, user_id: int | None, filename: str, rows: Sequence[dict]
) -> Dataset:
    """Rows as a JSON Lines upload through the normal ingest (profile, personal-data scan, content
    hash: building the same rows again returns the dataset already made)."""
    raw = store.temp_path(".jsonl")
    raw.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    dataset, _ = ingest_received(db, store, raw, workspace_id=workspace_id, user_id=user_id, filename=filename)
    return dataset


def votes_dataset(db: Session, store: ArtifactStore, *, workspace_id: int, user_id: int | None, scope: VoteScope) -> Dataset:
    rows = vote_pairs(db, workspace_id, scope)
    if not rows:
        raise PreferenceDataError(
            f"The blind review votes of {scope.describe()} yield no pairs yet (ties are left out). Vote in a blind review first."
        )
    suffix = (
        "workspace" if not scope.adapter_ids else ("compare-" if scope.comparison else "adapter-") + "-".join(map(str, scope.adapter_ids))
    )
    return _ingest_rows(db, store, workspace_id=workspace_id, user_id=user_id, filename=f"review-votes-{suffix}.jsonl", rows=rows)


# ---------------------------------------------------------------- corrections


def save_correction(
    db: Session, *, workspace_id: int, user_id: int | None, target: str, prompt: str, answer: str, correction: str
) -> Correction:
    prompt, answer, correction = prompt.strip(), answer.strip(), correction.strip()
    if not prompt:
        raise PreferenceDataError("The question is missing; ask something in the playground first.")
    if not correction:
        raise PreferenceDataError("Write the better answer before saving it.")
    if correction == answer:
        raise PreferenceDataError("The correction is the same as the model's answer; change it, or leave it.")
    if max(len(prompt), len(answer), len(correction)) > CORRECTION_MAX_CHARS:
        raise PreferenceDataError(f"Keep the question and the answers under {CORRECTION_MAX_CHARS:,} characters each.")
    row = Correction(
        workspace_id=workspace_id, user_id=user_id, target=target[:40] or "base", prompt=prompt, answer=answer, correction=correction
    )
    db.add(row)
    db.flush()
    return row


def corrections_for(db: Session, workspace_id: int, limit: int = 500) -> list[Correction]:
    return list(db.scalars(select(Correction).where(Correction.workspace_id == workspace_id).order_by(Correction.id.desc()).limit(limit)))


def corrections_dataset(db: Session, store: ArtifactStore, *, workspace_id: int, user_id: int | None) -> Dataset:
    corrections = list(db.scalars(select(Correction).where(Correction.workspace_id == workspace_id).order_by(Correction.id)))
    rows = [
        {"prompt": c.prompt, "chosen": c.correction, "rejected": c.answer, "chosen_by": "correction", "rejected_by": c.target}
        for c in corrections
        if c.answer.strip()  # an empty model answer is one-sided: nothing to prefer it over
    ]
    if not rows:
        raise PreferenceDataError('No corrections yet. In the playground, use "Write a better answer" under an answer.')
    return _ingest_rows(db, store, workspace_id=workspace_id, user_id=user_id, filename="playground-corrections.jsonl", rows=rows)


# ---------------------------------------------------------------- feedback (the serving hook)


def feedback_dataset(
    db: Session, store: ArtifactStore, *, workspace_id: int, user_id: int | None, name: str, rows: Iterable[tuple[str, str, bool]]
) -> Dataset:
    """(prompt, answer, good) rows as a feedback dataset for KTO. Serving's request log calls this
    with each served answer that got a thumbs up (good) or down (bad)."""
    records = [{"prompt": p, "answer": a, "feedback": "good" if good else "bad"} for p, a, good in rows if p.strip() and a.strip()]
    if not records:
        raise PreferenceDataError("No rated answers yet: give answers a thumbs up or down first.")
    return _ingest_rows(db, store, workspace_id=workspace_id, user_id=user_id, filename=f"{name}.jsonl", rows=records)
