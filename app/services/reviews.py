"""Blind review: a reviewer sees a prompt and two anonymous answers and picks the better one.

The answers come from stored evaluations (adapter vs base model, or adapter vs adapter on the same
held-out prompts). Which side is which stays in the database; the page only ever gets a token.
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Adapter, ReviewItem, utcnow
from app.services.artifacts import ArtifactStore
from app.services.evaluations import load_evaluation

CHOICES = ("left", "right", "tie")


class ReviewError(ValueError):
    """A review request that cannot be served, worded for the reviewer."""


def _evaluated(
    db: Session, store: ArtifactStore, workspace_id: int, adapter_ids: list[int], parents: dict[str, str] | None = None
) -> dict[str, list[dict]]:
    """'adapter:<id>' -> its evaluation rows (prompt, reference, base, adapter), for evaluated adapters.
    `parents` receives 'adapter:<id>' -> 'adapter:<parent id>' for adapters whose rows also hold
    their parent's answers on the same prompts (preference tuning continued from it)."""
    adapters = db.scalars(select(Adapter).where(Adapter.id.in_(adapter_ids), Adapter.workspace_id == workspace_id))
    rows = {}
    for adapter in adapters:
        evaluation = load_evaluation(store, adapter.id)
        if evaluation and evaluation["rows"]:
            rows[f"adapter:{adapter.id}"] = evaluation["rows"]
            if parents is not None and evaluation.get("parent_adapter_id") is not None and "parent" in evaluation["rows"][0]:
                parents[f"adapter:{adapter.id}"] = f"adapter:{evaluation['parent_adapter_id']}"
    return rows


def next_item(
    db: Session, store: ArtifactStore, *, workspace_id: int, reviewer_id: int, adapter_ids: list[int], rng: random.Random | None = None
) -> ReviewItem:
    """The reviewer's unanswered pair, or a fresh one (sides shuffled), stored until they vote."""
    rng = rng or random.SystemRandom()
    pending = db.scalar(
        select(ReviewItem)
        .where(ReviewItem.workspace_id == workspace_id, ReviewItem.reviewer_id == reviewer_id, ReviewItem.choice.is_(None))
        .order_by(ReviewItem.id.desc())
    )
    if pending is not None:
        return pending
    parents: dict[str, str] = {}
    rows = _evaluated(db, store, workspace_id, adapter_ids, parents)
    if not rows:
        raise ReviewError("None of these adapters has been evaluated yet. Evaluate them from the adapter list first.")
    adapters = list(rows)
    # Every adapter meets the base model; two adapters meet when they answered the same prompts.
    pairs = [(a, "base") for a in adapters]
    pairs += [
        (a, b)
        for i, a in enumerate(adapters)
        for b in adapters[i + 1 :]
        if [r["prompt"] for r in rows[a]] == [r["prompt"] for r in rows[b]]
    ]
    # A preference-tuned adapter meets the adapter it continued from, on the same prompts.
    pairs += [(a, parent) for a, parent in parents.items()]
    pair = list(rng.choice(pairs))
    first = pair[0]
    source = rows[first]  # always an adapter: its rows also hold the base model's (and its parent's) answers
    index = rng.randrange(len(source))
    rng.shuffle(pair)

    def answer(target: str) -> str:
        if target == "base":
            return source[index]["base"]
        if target == parents.get(first):
            return source[index]["parent"]
        return rows[target][index]["adapter"]

    item = ReviewItem(
        token=secrets.token_urlsafe(24),
        workspace_id=workspace_id,
        reviewer_id=reviewer_id,
        left_target=pair[0],
        right_target=pair[1],
        prompt=source[index]["prompt"],
        left_answer=answer(pair[0]),
        right_answer=answer(pair[1]),
    )
    db.add(item)
    db.flush()
    return item


def item_for(db: Session, token: str, workspace_id: int, reviewer_id: int) -> ReviewItem | None:
    item = db.scalar(select(ReviewItem).where(ReviewItem.token == token))
    if item is None or item.workspace_id != workspace_id or item.reviewer_id != reviewer_id:
        return None
    return item


def record_vote(db: Session, item: ReviewItem, choice: str) -> None:
    if choice not in CHOICES:
        raise ReviewError("Choose the left answer, the right answer, or a tie.")
    if item.choice is not None:
        raise ReviewError("You already voted on this pair.")
    item.choice = choice
    item.voted_at = utcnow()
    db.flush()


@dataclass
class WinRate:
    target: str
    opponent: str
    wins: int
    ties: int
    losses: int

    @property
    def votes(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def rate(self) -> float:
        return (self.wins + 0.5 * self.ties) / self.votes if self.votes else float("nan")

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson score interval for the win rate (ties count half)."""
        n = self.votes
        if n == 0:
            return float("nan"), float("nan")
        p = self.rate
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        # The Wilson interval always holds p; rounding can leave an end a hair short of it
        # (all wins over 6 votes gave a high of 0.9999999999999999 below a rate of 1.0).
        return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))

    def as_dict(self) -> dict:
        low, high = self.interval()
        return {
            "target": self.target,
            "opponent": self.opponent,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "votes": self.votes,
            "rate": self.rate,
            "low": low,
            "high": high,
        }


def win_rates(db: Session, workspace_id: int, adapter_ids: list[int]) -> list[dict]:
    """For each adapter, its record against each opponent it met in voted blind pairs."""
    wanted = {f"adapter:{i}" for i in adapter_ids}
    table: dict[tuple[str, str], WinRate] = {}
    votes = db.scalars(select(ReviewItem).where(ReviewItem.workspace_id == workspace_id, ReviewItem.choice.is_not(None)))
    for item in votes:
        for me, other, my_side in ((item.left_target, item.right_target, "left"), (item.right_target, item.left_target, "right")):
            if me not in wanted:
                continue
            record = table.setdefault((me, other), WinRate(me, other, 0, 0, 0))
            if item.choice == "tie":
                record.ties += 1
            elif item.choice == my_side:
                record.wins += 1
            else:
                record.losses += 1
    return [r.as_dict() for r in sorted(table.values(), key=lambda r: (r.target, r.opponent))]
