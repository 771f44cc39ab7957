"""The comparison page with three real adapters trained on the tiny model: HTML, JSON and CSV."""

from __future__ import annotations

import csv
import io

from tests.app.helpers import bearer
from tests.conftest import sign_in
from worker.evaluation.runner import evaluate_adapter


def test_three_adapters_side_by_side(facts_owner, train_adapter, client, make_user):
    _, email, password, token, dataset_id = facts_owner
    ids = [
        train_adapter(dataset_id, "rank 4", r=4, alpha=8),
        train_adapter(dataset_id, "rank 16", r=16, alpha=32),
        train_adapter(dataset_id, "rank 16 slow", r=16, alpha=32, learning_rate=1e-4),
    ]
    for adapter_id in ids:
        evaluate_adapter(adapter_id, max_rows=6)
    query = ",".join(map(str, ids))

    data = client.get(f"/api/v1/compare?ids={query}", headers=bearer(token)).json()
    assert [r["adapter_id"] for r in data["adapters"]] == ids
    for row in data["adapters"]:
        em = row["metrics"]["exact_match"]
        assert em["low"] <= em["value"] <= em["high"] and row["trainable_parameters"] > 0 and row["validation_loss"] is not None
    assert data["parameter_diff"]["r"] == [4, 16, 16] and data["parameter_diff"]["learning_rate"] == [0.005, 0.005, 0.0001]
    assert "technique" not in data["parameter_diff"]
    assert len(data["loss_curves"]) == 3 and all(curve["points"] for curve in data["loss_curves"])
    assert len(data["side_by_side"]) == 6 and all(len(item["answers"]) == 3 for item in data["side_by_side"])
    assert any("the base model" in v for v in data["verdicts"])
    assert data["best"]["metric:exact_match"] in ids

    sign_in(client, email, password)
    page = client.get(f"/compare?ids={ids[0]}&ids={ids[1]}&ids={ids[2]}")
    assert page.status_code == 200
    for name in ("rank 4", "rank 16 slow", "Settings that differ", "The same questions, side by side", "In plain words"):
        assert name in page.text
    assert page.text.count('<td class="best">') >= 1

    exported = list(csv.DictReader(io.StringIO(client.get(f"/compare.csv?ids={query}").text)))
    assert [row["name"] for row in exported] == ["rank 4", "rank 16", "rank 16 slow"]
    assert float(exported[0]["exact_match_low"]) <= float(exported[0]["exact_match"]) <= float(exported[0]["exact_match_high"])

    _, _, _, stranger = make_user("stranger")
    assert client.get(f"/api/v1/compare?ids={query}", headers=bearer(stranger)).status_code == 404
