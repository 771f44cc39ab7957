"""Personal data: the masked training copy of a dataset (the original stays as uploaded)."""

from __future__ import annotations

import csv

from sqlalchemy.orm import Session

from app.models import Dataset
from app.services import pii
from app.services.artifacts import ArtifactStore
from app.services.dataset_normalise import ROWS_AT_ONCE
from app.services.dataset_store import TRAINING_COPY_NAME, dataset_key
from app.services.profiling import personal_data_cells


def mask_rows(rows: list[list[str]], width: int, totals: dict[str, int]) -> list[list[str]]:
    """The rows with personal data masked, adding the counts per kind to totals. Only the cells
    that may hold any are looked at, found a column at a time (profiling.personal_data_cells)."""
    rows = [list(cells) for cells in rows]
    if all(len(cells) == width for cells in rows):
        found = [(r, i) for i, column in enumerate(zip(*rows)) for r in personal_data_cells(column, list(map(len, column)))]
    else:  # not the shape of a stored dataset: cell by cell
        found = [(r, i) for r, cells in enumerate(rows) for i, cell in enumerate(cells) if pii.may_hold_personal_data(cell)]
    for r, i in found:
        rows[r][i], counts = pii.mask_personal_data(rows[r][i])
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
    return rows


def set_pii_masking(db: Session, store: ArtifactStore, dataset: Dataset, on: bool) -> dict[str, int]:
    """Write (on) or remove (off) the training copy with personal data replaced by [EMAIL],
    [PHONE], ...; the original stays unchanged. Returns the counts masked per kind."""
    if not on:
        store.delete(dataset_key(dataset.id, TRAINING_COPY_NAME))
        dataset.pii_masked = False
        db.flush()
        return {}
    totals: dict[str, int] = {}
    target = store.temp_path(".csv")
    try:
        with (
            open(store.path(dataset.storage_key), encoding="utf-8", newline="") as f,
            open(target, "w", encoding="utf-8", newline="") as out,
        ):
            reader = csv.reader(f)
            writer = csv.writer(out)
            header = next(reader)
            writer.writerow(header)
            while rows := [cells for _, cells in zip(range(ROWS_AT_ONCE), reader)]:
                writer.writerows(mask_rows(rows, len(header), totals))
        store.put_file(dataset_key(dataset.id, TRAINING_COPY_NAME), target)
    finally:
        target.unlink(missing_ok=True)
    dataset.pii_masked = True
    db.flush()
    return totals
