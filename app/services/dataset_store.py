"""Where a dataset's files live in the artifact store, and the error the dataset services raise."""

from __future__ import annotations

from app.models import Dataset
from app.services.tabular_formats import TableError

NORMALISED_NAME = "rows.csv"
TRAINING_COPY_NAME = "training.csv"  # personal data masked; exists only while dataset.pii_masked
ROW_INDEX_NAME = "row_index.json"

# Kept as the services' own name: a TableError from the readers is a DatasetError.
DatasetError = TableError


def dataset_key(dataset_id: int, name: str = NORMALISED_NAME) -> str:
    return f"datasets/{dataset_id}/{name}"


def training_key(dataset: Dataset) -> str:
    """The copy that training reads: the masked one while personal data masking is on."""
    return dataset_key(dataset.id, TRAINING_COPY_NAME) if dataset.pii_masked else dataset.storage_key
