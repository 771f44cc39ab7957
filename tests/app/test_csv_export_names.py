"""Column names a spreadsheet would run as formulas are made inert in every CSV export, like cells."""

from __future__ import annotations

import csv
import io

from app.services.compare import comparison_csv
from tests.app.helpers import bearer, upload
from tests.conftest import sign_in

HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+SUM(A1)", "-2+3", "@cmd", "plain"]


def test_formula_like_column_names_are_inert_in_the_dataset_export(client, make_user):
    _, email, password, token = make_user()
    header = ",".join(f'"{name.replace(chr(34), chr(34) * 2)}"' for name in HOSTILE)
    body = upload(client, token, (header + "\n1,2,3,4,5\n").encode(), "names.csv").json()
    assert body["columns"] == HOSTILE  # stored as given; only what leaves as CSV is changed
    sign_in(client, email, password)
    for training_copy in ("false", "true"):
        export = client.get(f"/datasets/{body['id']}/export.csv", params={"training_copy": training_copy})
        names = next(csv.reader(io.StringIO(export.text)))
        assert names == ["'" + n for n in HOSTILE[:4]] + ["plain"]
    assert client.get(f"/api/v1/datasets/{body['id']}", headers=bearer(token)).json()["columns"] == HOSTILE


def test_formula_like_names_and_cells_are_inert_in_the_comparison_export():
    adapter = {
        "adapter_id": 1,
        "name": "=cmd|' /C calc'!A0",
        "technique": "\tlora",
        "base_model": "@base",
        "trainable_parameters": 10,
        "size_bytes": -5,
        "train_seconds": "-3",
        "peak_memory_bytes": None,
        "tokens_per_second": 1.5,
        "validation_loss": 0.5,
        "perplexity": 1.6,
        "metrics": {"=evil": {"value": 0.5, "low": 0.4, "high": 0.6}},
    }
    rows = list(csv.reader(io.StringIO(comparison_csv({"adapters": [adapter]}))))
    assert rows[0][-3:] == ["'=evil", "'=evil_low", "'=evil_high"]
    assert rows[1][1:4] == ["'=cmd|' /C calc'!A0", "'\tlora", "'@base"]
    assert rows[1][5:7] == ["-5", "-3"]  # numbers stay numbers
