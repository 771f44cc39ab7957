"""Label scores, ratio intervals and verdict words, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from app.domain.label_metrics import label_summary, macro_f1, macro_f1_difference, majority_label
from app.domain.stats import Estimate, bootstrap_ratio, compare_in_words, exponentiated
from worker.evaluation.continuations import continuation_pairs


def test_majority_label_breaks_ties_alphabetically():
    assert majority_label(["b", "a", "b", "c"]) == "b"
    assert majority_label(["b", "a"]) == "a"


def test_label_summary_by_hand():
    gold = ["cat", "cat", "dog", "dog", "fish"]
    predicted = ["cat", "dog", "dog", "dog", "cat"]
    summary = label_summary(predicted, gold, ["cat", "dog", "fish"])
    assert summary["confusion"] == {"labels": ["cat", "dog", "fish"], "matrix": [[1, 1, 0], [0, 2, 0], [1, 0, 0]]}
    assert summary["accuracy"]["value"] == pytest.approx(3 / 5)
    # F1: cat 2*1/(2+1+1)=0.5, dog 2*2/(4+1+0)=0.8, fish 0 -> mean 0.4333
    assert summary["macro_f1"]["value"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    for metric in ("accuracy", "macro_f1"):
        assert summary[metric]["low"] <= summary[metric]["value"] <= summary[metric]["high"]


def test_macro_f1_difference_is_paired():
    gold = ["a", "b"] * 30
    same = macro_f1_difference(gold, gold, gold)
    assert same == Estimate(0.0, 0.0, 0.0)
    always_a = ["a"] * 60
    better = macro_f1_difference(always_a, gold, gold)
    assert better.value == pytest.approx(1.0 - macro_f1(always_a, gold)) and better.low > 0


def test_loss_interval_weights_rows_by_their_tokens():
    sums, tokens = [10.0, 1.0, 30.0, 2.0], [5, 1, 10, 2]
    estimate = bootstrap_ratio(sums, tokens)
    assert estimate.value == pytest.approx(43 / 18)  # not the mean of per-row losses (2, 1, 3, 1)
    assert estimate.low <= estimate.value <= estimate.high
    wide, narrow = bootstrap_ratio(sums, tokens), bootstrap_ratio(sums * 25, tokens * 25)
    assert narrow.high - narrow.low < wide.high - wide.low
    ppl = exponentiated(estimate)
    assert ppl.value == pytest.approx(math.exp(43 / 18)) and ppl.low == pytest.approx(math.exp(estimate.low))


def test_a_lower_loss_reads_as_better():
    base_loss = [3.0, 3.2, 2.9, 3.1] * 10
    adapter_loss = [1.0, 1.1, 0.9, 1.2] * 10
    words = compare_in_words("the base model", "LoRA", {"validation_loss": (base_loss, adapter_loss)})
    assert words == "LoRA is better than the base model on 1 of 1 metrics (validation loss)."
    words = compare_in_words("the majority-class baseline", "LoRA", {}, {"macro_f1": Estimate(0.3, 0.1, 0.5)})
    assert words == "LoRA is better than the majority-class baseline on 1 of 1 metrics (macro-F1)."


def test_continuations_split_held_out_texts():
    text = " ".join(f"w{i}" for i in range(100))
    pairs = continuation_pairs([(text,), ("too short to continue",)])
    assert pairs == [(" ".join(f"w{i}" for i in range(32)), " ".join(f"w{i}" for i in range(32, 64)))]
    assert continuation_pairs(["one two three four five six seven eight nine ten"]) == [
        ("one two three four five", "six seven eight nine ten")
    ]
