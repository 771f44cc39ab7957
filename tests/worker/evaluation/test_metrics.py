"""Metrics against values computed by hand on fixed strings; intervals narrow as rows grow."""

import random

import pytest

from app.domain.stats import bootstrap_difference, bootstrap_mean, compare_in_words
from worker.evaluation.metrics import (
    accuracy,
    confusion_matrix,
    exact_match,
    macro_f1,
    normalise_answer,
    rouge_l,
    score_generations,
    token_f1,
)


def test_normalisation_drops_case_punctuation_and_articles():
    assert normalise_answer("The  Parcel, arrives TOMORROW!") == "parcel arrives tomorrow"


def test_exact_match():
    assert exact_match("Returns are free.", "returns are free") == 1.0
    assert exact_match("Returns are free", "Returns cost 5 euros") == 0.0


def test_token_f1_by_hand():
    # prediction: [returns, are, free, in, uk] (5); reference: [returns, are, free] (3); common 3
    # precision 3/5, recall 3/3 -> F1 = 2*0.6*1/(1.6) = 0.75
    assert token_f1("Returns are free in the UK", "Returns are free") == pytest.approx(0.75)
    assert token_f1("nothing shared", "completely different") == 0.0
    assert token_f1("", "") == 1.0


def test_rouge_l_by_hand():
    # pred: [we, ship, to, eu, and, uk] (6); ref: [we, ship, to, uk] (4); LCS = we ship to uk = 4
    # precision 4/6, recall 4/4 -> F = 2*(2/3)*1/(5/3) = 0.8
    assert rouge_l("We ship to the EU and UK", "We ship to the UK") == pytest.approx(0.8)
    # order matters for ROUGE-L but not for token F1
    assert rouge_l("uk to ship we", "we ship to uk") == pytest.approx(0.25)
    assert token_f1("uk to ship we", "we ship to uk") == pytest.approx(1.0)


def test_classification_metrics_by_hand():
    gold = ["billing", "billing", "shipping", "returns"]
    pred = ["billing", "shipping", "shipping", "billing"]
    assert accuracy(pred, gold) == 0.5
    labels, matrix = confusion_matrix(pred, gold)
    assert labels == ["billing", "returns", "shipping"]
    assert matrix == [[1, 0, 1], [1, 0, 0], [0, 0, 1]]
    # F1: billing tp1 fp1 fn1 -> 0.5; returns 0; shipping tp1 fp1 fn0 -> 2/3; mean = (0.5 + 0 + 2/3) / 3
    assert macro_f1(pred, gold) == pytest.approx((0.5 + 0 + 2 / 3) / 3)


def test_score_generations_gives_one_score_per_row_and_metric():
    scores = score_generations(["a b", "c"], ["a b", "d"])
    assert scores == {"exact_match": [1.0, 0.0], "token_f1": [1.0, 0.0], "rouge_l": [1.0, 0.0]}


def test_bootstrap_intervals_contain_the_mean_and_narrow_as_rows_grow():
    rng = random.Random(1)
    widths = []
    for n in (20, 200, 2000):
        values = [float(rng.random() < 0.6) for _ in range(n)]
        estimate = bootstrap_mean(values, resamples=500)
        assert estimate.low <= estimate.value <= estimate.high
        widths.append(estimate.high - estimate.low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.06


def test_comparison_in_words_separates_real_differences_from_noise():
    rng = random.Random(2)
    a_em = [float(rng.random() < 0.2) for _ in range(300)]
    b_em = [float(rng.random() < 0.7) for _ in range(300)]
    a_rouge = [rng.random() for _ in range(300)]
    b_rouge = [x + rng.uniform(-0.01, 0.01) for x in a_rouge]
    sentence = compare_in_words("LoRA", "IA³", {"exact_match": (a_em, b_em), "rouge_l": (a_rouge, b_rouge)})
    assert sentence == "IA³ is better than LoRA on 1 of 2 metrics (exact match); the ROUGE-L difference is within noise."
    same = compare_in_words("A", "B", {"rouge_l": (a_rouge, b_rouge)})
    assert "cannot be told apart" in same
    assert bootstrap_difference(a_em, b_em).low > 0
