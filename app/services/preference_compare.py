"""The comparison page's part for preference-tuned adapters: held-out reward accuracy and margin
with their 95% intervals (written by worker/training/preference.py into the adapter's metrics),
and the verdict in words."""

from __future__ import annotations

from typing import Any

from app.domain.preference_losses import PREFERENCE_LOSSES
from app.models import Adapter, Job

CHANCE = 0.5


def preference_rows(adapters: list[Adapter], jobs: dict[int, Job | None]) -> list[dict[str, Any]]:
    """One row per adapter that was preference-tuned (others are left out)."""
    rows = []
    for adapter in adapters:
        m = adapter.metrics or {}
        if "reward_accuracy" not in m:
            continue
        job = jobs.get(adapter.id)
        loss = PREFERENCE_LOSSES.get(str(m.get("preference_loss")))
        rows.append(
            {
                "adapter_id": adapter.id,
                "name": adapter.name,
                "loss": loss.name if loss else m.get("preference_loss"),
                "parent_adapter_id": job.parent_adapter_id if job else None,
                "held_out": m.get("held_out_examples"),
                "accuracy": {"value": m["reward_accuracy"], "low": m.get("reward_accuracy_low"), "high": m.get("reward_accuracy_high")},
                "margin": {"value": m.get("reward_margin"), "low": m.get("reward_margin_low"), "high": m.get("reward_margin_high")},
            }
        )
    return rows


def preference_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """E.g. 'After DPO, X ranks the preferred answer higher on 92% of 25 held-out pairs (95% interval
    80%–100%): clearly better than chance.'"""
    sentences = []
    for row in rows:
        acc, margin = row["accuracy"], row["margin"]
        low, high = acc.get("low"), acc.get("high")
        span = f" (95% interval {100 * low:.0f}%–{100 * high:.0f}%)" if low is not None and high is not None else ""
        what = f"{row['held_out']} held-out examples" if row.get("held_out") else "the held-out examples"
        if low is not None and low > CHANCE:
            judgement = "it learnt the preference, clearly better than chance (50%)"
        elif high is not None and high < CHANCE:
            judgement = "it ranks them worse than chance: check that the chosen and rejected columns are not swapped"
        else:
            judgement = "that is within noise of chance (50%): more pairs or more training are needed to tell"
        margin_words = ""
        if margin.get("value") is not None:
            margin_words = f" The reward margin is {margin['value']:.2f}"
            if margin.get("low") is not None:
                margin_words += f" [{margin['low']:.2f}, {margin['high']:.2f}]"
            margin_words += "."
        sentences.append(
            f"After {row['loss']}, {row['name']} rewards the preferred answer on {100 * acc['value']:.0f}% of {what}{span}; "
            f"{judgement}.{margin_words}"
        )
    return sentences
