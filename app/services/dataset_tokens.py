"""Token lengths of a dataset's columns with a base model's own tokenizer (no torch)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from app.models import Dataset
from app.services.artifacts import ArtifactStore
from app.services.stored_rows import iter_training_rows
from app.services.dataset_store import DatasetError, dataset_key

TOKEN_SAMPLE_ROWS = 20_000


def tokenizer_file_for(location: str) -> Path | None:
    folder = Path(location)
    candidate = folder / "tokenizer.json" if folder.is_dir() else folder.parent / "tokenizer.json"
    return candidate if candidate.is_file() else None


def token_lengths(store: ArtifactStore, dataset: Dataset, *, model_key: str, model_location: str, columns: list[str],
                  max_length: int) -> dict[str, Any]:
    """Token counts of the chosen columns (joined as the model would read them) with the base
    model's own tokenizer: histogram, percentiles and rows over max_length. Large datasets are
    measured on an even sample of TOKEN_SAMPLE_ROWS rows. Cached as an artifact per model and
    columns."""
    from app.services.profiling import load_tokenizer, token_length_report

    unknown = [c for c in columns if c not in dataset.columns]
    if unknown:
        raise DatasetError(f"The dataset has no column named {unknown[0]!r}.")
    if not columns:
        raise DatasetError("Choose at least one column to measure.")
    if not 1 <= max_length <= 1_000_000:
        raise DatasetError("The maximum length must be between 1 and 1,000,000 tokens.")
    tokenizer_path = tokenizer_file_for(model_location)
    if tokenizer_path is None:
        raise DatasetError(f"The base model {model_key!r} has no tokenizer.json in its folder, so its tokens cannot be counted here.", 409)
    cache_id = hashlib.sha1(json.dumps([model_key, str(tokenizer_path), tokenizer_path.stat().st_mtime_ns, columns, max_length,
                                        dataset.pii_masked]).encode()).hexdigest()[:20]
    cache_key = dataset_key(dataset.id, f"token_lengths/{cache_id}.json")
    if store.exists(cache_key):
        try:
            return json.loads(store.path(cache_key).read_text())
        except (OSError, ValueError):
            pass
    stride = max(1, math.ceil(dataset.row_count / TOKEN_SAMPLE_ROWS))
    texts: list[tuple[int, str]] = []
    for number, row in enumerate(iter_training_rows(store, dataset), start=1):
        if (number - 1) % stride:
            continue
        texts.append((number, "\n\n".join((row.get(c) or "") for c in columns)))
    report = token_length_report(texts, load_tokenizer(tokenizer_path), max_length, dataset.row_count)
    report.update({"base_model": model_key, "columns": columns})
    tmp = store.temp_path(".json")
    tmp.write_text(json.dumps(report))
    store.put_file(cache_key, tmp)
    return report
