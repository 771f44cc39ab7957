"""Token lengths of a dataset's columns with a base model's own tokenizer (no torch)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from app.models import Dataset
from app.services.artifacts import ArtifactStore
from app.services.dataset_store import DatasetError, dataset_key
from app.services.stored_rows import iter_training_rows

TOKEN_SAMPLE_ROWS = 20_000


def tokenizer_file_for(location: str) -> Path | None:
    folder = Path(location)
    candidate = folder / "tokenizer.json" if folder.is_dir() else folder.parent / "tokenizer.json"
    return candidate if candidate.is_file() else None


def token_lengths(
    store: ArtifactStore, dataset: Dataset, *, model_key: str, model_location: str, columns: list[str], max_length: int
) -> dict[str, Any]:
    """Token counts of the chosen columns (joined as the model would read them) with the base
    model's own tokenizer: histogram, percentiles and rows over max_length. Large datasets are
    measured on an even sample of TOKEN_SAMPLE_ROWS rows. Cached as an artifact per model and
    columns."""
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
    cache_id = hashlib.sha1(
        json.dumps([model_key, str(tokenizer_path), tokenizer_path.stat().st_mtime_ns, columns, max_length, dataset.pii_masked]).encode()
    ).hexdigest()[:20]
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


def histogram(lengths: list[int], bins: int = 20) -> list[dict[str, int]]:
    """Equal-width bins from 0 to the longest value: [{"start", "end", "count"}]."""
    if not lengths:
        return []
    top = max(lengths)
    width = max(1, -(-(top + 1) // bins))
    counts = [0] * bins
    for value in lengths:
        counts[min(value // width, bins - 1)] += 1
    return [{"start": i * width, "end": (i + 1) * width - 1, "count": c} for i, c in enumerate(counts)]


def percentile(sorted_values: list[int], fraction: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def load_tokenizer(tokenizer_file: Path):
    """A `tokenizers` tokenizer from a model's tokenizer.json (no torch, no transformers)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_file))


def token_length_report(texts_with_rows: list[tuple[int, str]], tokenizer, max_length: int, total_rows: int) -> dict[str, Any]:
    """Token counts of the given texts: histogram, percentiles and rows over max_length."""
    lengths: list[int] = []
    over: list[int] = []
    batch = 512
    for start in range(0, len(texts_with_rows), batch):
        chunk = texts_with_rows[start : start + batch]
        encodings = tokenizer.encode_batch([text for _, text in chunk], add_special_tokens=False)
        for (row, _), encoding in zip(chunk, encodings):
            n = len(encoding.ids)
            lengths.append(n)
            if n > max_length:
                over.append(row)
    ordered = sorted(lengths)
    measured = len(lengths)
    scale = total_rows / measured if measured else 0
    return {
        "measured_rows": measured,
        "total_rows": total_rows,
        "sampled": measured < total_rows,
        "max_length": max_length,
        "mean": round(sum(lengths) / measured, 1) if measured else 0,
        "median": percentile(ordered, 0.5),
        "p95": percentile(ordered, 0.95),
        "max": ordered[-1] if ordered else 0,
        "histogram": histogram(lengths),
        "over_max_length": round(len(over) * scale),
        "over_max_length_rows": over[:20],
    }
