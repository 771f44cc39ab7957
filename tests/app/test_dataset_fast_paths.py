"""The ingest's faster paths give exactly what the plain, one-by-one definitions give: records
taken from the reader a batch at a time, duplicate rows counted with the hash buckets spilled to
disk or held in memory, near-duplicate keys made a batch at a time, and the personal-data scan that
searches whole columns and skips numbering columns."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.services import duplicate_rows, pii, profiling
from app.services.dataset_masking import mask_rows
from app.services.dataset_normalise import write_normalised
from app.services.dataset_store import DatasetError
from app.services.duplicate_rows import near_duplicate_key, near_duplicate_keys
from app.services.profiling import ProfileBuilder
from app.services.tabular_formats import Table, TableError


def test_a_record_before_a_reader_error_in_the_same_batch_is_reported_first(tmp_path):
    """Records come from the reader a batch at a time; an error the reader raises later in a batch
    must not hide the problem of a record before it."""

    def rows():
        yield 1, ["question", "answer"]
        yield 2, ["fine", "row"]
        yield 3, ["a quote opened here", "and ran\ninto the next line", "and on"]
        raise TableError("Line 9 could not be read as CSV.")

    with pytest.raises(DatasetError, match="A quote opened in line 3, column 'answer'"):
        write_normalised(Table(format="csv", header=[], rows=rows()), tmp_path / "out.csv", work_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no profile files left behind


def _profile(rows: list[list[str]], tmp_path) -> dict:
    builder = ProfileBuilder(["a", "b"], tmp_path)
    try:
        for number, row in enumerate(rows, start=1):
            builder.add(number, row)
        return builder.finish()
    finally:
        builder.close()


def _plain_duplicates(rows: list[list[str]]) -> tuple[int, list[dict], int, list[dict]]:
    """The definition: a row repeating an earlier one (exactly / by near key), first ones shown."""
    exact_first: dict[tuple, int] = {}
    near_first: dict[bytes, int] = {}
    exact_rows, near_rows = [], []
    for row_number, row in enumerate(rows, start=1):
        exact_seen = exact_first.setdefault(tuple(row), row_number)
        near_seen = near_first.setdefault(near_duplicate_key("\x1f".join(row)), row_number)
        if exact_seen != row_number:
            exact_rows.append({"row": row_number, "same_as": exact_seen})
        elif near_seen != row_number:
            near_rows.append({"row": row_number, "same_as": near_seen})
    return len(exact_rows), exact_rows[:3], len(near_rows), near_rows[:3]


def test_duplicates_spilled_to_bucket_files_match_the_definition(tmp_path, monkeypatch):
    rng = random.Random(7)
    texts = ["Where is my order?", "where is my ORDER", "Refund, please", "refund please!", "Hello", "Size 42"]
    rows = [[rng.choice(texts), rng.choice(texts)] for _ in range(5000)]
    expected = _plain_duplicates(rows)
    monkeypatch.setattr(duplicate_rows, "SPILL_ROWS", 700)  # many spills, every bucket file in use
    monkeypatch.setattr(duplicate_rows, "CHUNK_PAIRS", 37)  # and each bucket counted in many chunks
    spilled = _profile(rows, tmp_path)["duplicates"]
    monkeypatch.setattr(duplicate_rows, "SPILL_ROWS", 10**9)
    held = _profile(rows, tmp_path)["duplicates"]
    assert spilled == held
    assert (spilled["exact"], spilled["exact_examples"], spilled["near"], spilled["near_examples"]) == expected
    assert not list(tmp_path.iterdir())  # the bucket files go with the builder


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("aA b,.\x1f\x00é€-"), max_size=6), max_size=30))
def test_near_duplicate_keys_of_a_column_are_the_keys_of_each_cell(cells):
    assert near_duplicate_keys(tuple(cells)) == [near_duplicate_key(cell) for cell in cells]


def test_numbering_columns_are_scanned_only_where_personal_data_can_be():
    rng = random.Random(3)
    cells = [str(rng.randrange(10 ** rng.randint(1, 20))).zfill(rng.choice([1, 1, 1, 8, 14])) for _ in range(20000)]
    cells += ["4111111111111111", "07700900123", "123456789012", "0123456"]
    candidates = set(profiling.personal_data_cells(tuple(cells), list(map(len, cells))))
    found = {i for i, cell in enumerate(cells) if pii.find_personal_data(cell)}
    assert found <= candidates and {len(cells) - 4, len(cells) - 3} <= found
    ids = tuple(str(n) for n in range(1, 200_001)) + ("07700900123",)
    assert list(profiling.personal_data_cells(ids, list(map(len, ids)))) == [200_000]  # one cell to look at, not 200,000


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab @1234567890-+() .é"), max_size=12), min_size=1, max_size=60))
def test_cells_found_by_searching_a_whole_column_are_those_asked_one_by_one(column):
    column = tuple(column)
    expected = [i for i, cell in enumerate(column) if pii.may_hold_personal_data(cell)]
    found = list(profiling.personal_data_cells(column, list(map(len, column))))
    if "".join(column).isascii() and "".join(column).isdigit():
        assert {i for i in expected if pii.find_personal_data(column[i])} <= set(found)
    else:
        assert found == expected


def test_masking_a_column_at_a_time_masks_what_cell_by_cell_masking_does():
    rng = random.Random(11)
    kinds = [
        "Write to jane.doe@example.com",
        "call +44 20 7946 0018 today",
        "card 4111 1111 1111 1111",
        "plain words",
        "",
        "07700900123",
        "2024-05-01",
        "IBAN GB82WEST12345698765432",
        "ssn 078-05-1120",
        "order 12345",
    ]
    rows = [[str(n), rng.choice(kinds), rng.choice(kinds) + " " + rng.choice(kinds)] for n in range(3000)]
    rows.append(["x", "ragged"])  # not a stored dataset's shape: still masked, cell by cell
    expected_totals: dict[str, int] = {}
    expected = []
    for cells in rows:
        masked = []
        for cell in cells:
            cell, counts = pii.mask_personal_data(cell)
            for kind, n in counts.items():
                expected_totals[kind] = expected_totals.get(kind, 0) + n
            masked.append(cell)
        expected.append(masked)
    totals: dict[str, int] = {}
    got = mask_rows(rows[:1024], 3, totals) + mask_rows(rows[1024:2048], 3, totals) + mask_rows(rows[2048:], 3, totals)
    assert got == expected and totals == expected_totals and len(totals) == 5


def test_counting_duplicates_of_one_row_repeated_millions_of_times_stays_small(tmp_path):
    """All rows identical put every hash in one bucket; it is counted a chunk at a time."""
    import tracemalloc

    import numpy as np

    buckets = duplicate_rows.HashBuckets(tmp_path)
    rows = 3_000_000
    for start in range(0, rows, 100_000):
        buckets.add_array(np.full(100_000, 12345, np.int64), start + 1)
    tracemalloc.start()
    count, examples, repeated = buckets.duplicates()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == rows - 1 and examples == [(2, 1), (3, 1), (4, 1)]
    assert len(repeated) == duplicate_rows.REPEATED_ROWS_KEPT and repeated[0] == 2
    assert peak < 40 * 2**20, f"{peak / 2**20:.0f} MB"  # the whole bucket at once took 232 MB
