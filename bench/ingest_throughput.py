"""Ingest throughput and peak memory: Tailor's ingest of an upload (content hash, encoding and
delimiter detection, parsing, profile with duplicates and personal data, storing it) against
`pandas.read_csv` on the same generated CSV, in the same run. Both start from the file on disk:
the copy of the upload into the store (what the HTTP upload writes) is timed apart.

    python bench/ingest_throughput.py                    # 1 GB, 2 million rows under /tmp
    python bench/ingest_throughput.py --rows 200000      # a quicker look
    python bench/ingest_throughput.py --rows 400000 --pyarrow   # also the pyarrow.csv candidate (needs pyarrow)

Each side runs in its own child process so that peak memory (ru_maxrss) is its own; Tailor's figure
is the larger of its process and the scanner's child process, and its CPU time includes the child's. Needs the
`bench` extra (pandas). Prints rows/s, MB/s, CPU seconds and peak memory, the ratios, and the load
average: on a shared machine the wall-clock figures move with the load, CPU seconds much less.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORDS = (
    "order parcel refund delivery invoice account password shipping return exchange size colour jacket boots tent "
    "warranty store opening hours discount code voucher newsletter payment card bank transfer tracking number "
    "customer service please thanks hello sorry delayed arrived broken missing wrong item replacement"
).split()


def generate(path: Path, rows: int, target_bytes: int, seed: int = 0) -> None:
    """A support-desk export: id, question, answer, category, created; some duplicates and personal data."""
    rng = random.Random(seed)
    answer_words = max(8, (target_bytes // rows - 120) // 7)
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(answer_words - 6, answer_words + 6))) for _ in range(4000)]
    questions = [" ".join(rng.choices(WORDS, k=rng.randint(8, 16))).capitalize() + "?" for _ in range(4000)]
    categories = ["shipping", "billing", "returns", "account", "product", "store"]
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("id,question,answer,category,created\n")
        lines = []
        for i in range(rows):
            answer = sentences[rng.randrange(4000)]
            if i % 500 == 0:
                answer += f" Write to agent{i % 97}@example.com or call +44 20 7946 {i % 10000:04d}."
            lines.append(f'{i},"{questions[rng.randrange(4000)]}","{answer}",{categories[i % 6]},2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}\n')
            if len(lines) == 10_000:
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))


def run_child(kind: str, path: Path) -> dict:
    """Run one side in a child process; returns its report plus peak memory from wait4."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed with exit code {proc.returncode}")
    report = json.loads(output.decode().strip().splitlines()[-1])
    report["peak_rss_mb"] = max(usage.ru_maxrss / 1024, report.get("children_peak_rss_mb", 0))  # kilobytes on Linux
    return report


def cpu_seconds() -> float:
    """This process's CPU time and that of its finished children (Tailor scans big files in one)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def child_tailor(path: Path) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="tailor-bench-data-", dir=path.parent))
    os.environ["TAILOR_DATA_DIR"] = str(data_dir)
    from app.db import session_scope
    from app.migrate import upgrade_database
    from app.services.accounts import create_user
    from app.services.artifacts import get_artifact_store
    from app.services.dataset_ingest import ingest_received, receive_upload

    upgrade_database()
    with session_scope() as db:
        user = create_user(db, "bench@example.com", "correct horse battery")
        user_id, workspace_id = user.id, user.workspace_id
    store = get_artifact_store()
    from app.services.plain_csv import ScannerProcess, scan_plain_csv

    warm = store.temp_path(".csv")
    warm.write_text("a,b\n1,2\n")
    scan_plain_csv(warm, ["a", "b"])  # compiles the scanner on a first run (numba caches it beside its source)
    started = time.perf_counter()
    ScannerProcess().scan(warm, ["a", "b"])  # what a scanner process needs to start, measured on its own
    startup_seconds = time.perf_counter() - started
    warm.unlink()
    # Not timed: what the HTTP upload itself does, writing the request's bytes to a file in the store
    # (pandas.read_csv also starts from a file on disk). As in the server, the scanner's process starts
    # when this copy begins.
    scanner = ScannerProcess()
    raw = store.temp_path(".upload")
    started = time.perf_counter()
    with open(path, "rb") as source:
        receive_upload(source, raw, path.stat().st_size + 1)
    receive_seconds = time.perf_counter() - started
    start, cpu = time.perf_counter(), cpu_seconds()
    with session_scope() as db:
        dataset, report = ingest_received(db, store, raw, workspace_id=workspace_id, user_id=user_id, filename=path.name, scanner=scanner)
        rows = dataset.row_count
        profile = dataset.profile
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    import resource

    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the scanner's process
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "children_peak_rss_mb": children_peak,
        "exact_duplicates": profile["duplicates"]["exact"],
        "near_duplicates": profile["duplicates"]["near"],
        "personal_data": profile["personal_data_total"],
        "receive_seconds": receive_seconds,
        "startup_seconds": startup_seconds,
        "data_dir": str(data_dir),
        "profile": profile,
    }


def child_pandas(path: Path) -> dict:
    import pandas

    start, cpu = time.perf_counter(), cpu_seconds()
    frame = pandas.read_csv(path)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    strings = str(frame.dtypes.get("question"))  # object, or pandas 3's str backed by pyarrow when it is installed
    return {"rows": len(frame), "seconds": seconds, "cpu_seconds": cpu, "strings": f"pandas {pandas.__version__}, {strings} strings"}


def child_pyarrow(path: Path) -> dict:
    """The candidate for the clean-file path: pyarrow's streaming CSV reader (multi-threaded, all
    columns as strings) feeding the profile's one row-wise implementation, and the content hash."""
    import hashlib

    import pyarrow
    import pyarrow.csv as arrow_csv

    from app.services.profiling import ProfileBuilder

    start, cpu = time.perf_counter(), cpu_seconds()
    with open(path, "rb") as f:
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        f.seek(0)
        columns = f.readline().decode().rstrip("\r\n").split(",")
    reader = arrow_csv.open_csv(
        path,
        read_options=arrow_csv.ReadOptions(block_size=4 << 20),
        parse_options=arrow_csv.ParseOptions(newlines_in_values=True),
        convert_options=arrow_csv.ConvertOptions(
            column_types=dict.fromkeys(columns, pyarrow.string()), strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    profile = ProfileBuilder(columns, path.parent)
    rows = 0
    try:
        for batch in reader:
            records = list(map(list, zip(*(column.to_pylist() for column in batch.columns))))
            profile.add_rows(rows + 1, records)
            rows += len(records)
        result = profile.finish()
    finally:
        profile.close()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "exact_duplicates": result["duplicates"]["exact"],
        "near_duplicates": result["duplicates"]["near"],
        "personal_data": result["personal_data_total"],
        "strings": f"pyarrow {pyarrow.__version__} + ProfileBuilder",
        "profile": json.loads(json.dumps(result)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--bytes", type=int, default=None, help="target file size (default: 500 bytes a row, 1 GB for 2M rows)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the generated file goes (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    parser.add_argument("--pyarrow", action="store_true", help="also time pyarrow.csv feeding the row-wise profile")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path = args.child
        report = {"tailor": child_tailor, "pandas": child_pandas, "pyarrow": child_pyarrow}[kind](Path(path))
        print(json.dumps(report))
        return

    target = args.bytes or args.rows * 500
    work = Path(tempfile.mkdtemp(prefix="tailor-bench-", dir=args.dir))
    path = work / "support_export.csv"
    started = time.perf_counter()
    generate(path, args.rows, target)
    size = path.stat().st_size
    print(f"generated {args.rows:,} rows, {size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s: {path}")
    try:
        results = {}
        for kind in ("pandas", "tailor") + (("pyarrow",) if args.pyarrow else ()):
            results[kind] = run_child(kind, path)
            r = results[kind]
            print(
                f"{kind:>7}: {r['rows']:,} rows in {r['seconds']:.1f} s = {r['rows'] / r['seconds']:,.0f} rows/s, "
                f"{size / 1e6 / r['seconds']:.0f} MB/s, {r['cpu_seconds']:.1f} CPU s, peak memory {r['peak_rss_mb']:.0f} MB"
                f"{'  (' + r['strings'] + ')' if 'strings' in r else ''}   load average {os.getloadavg()[0]:.1f}"
            )
        t, p = results["tailor"], results["pandas"]
        assert t["rows"] == p["rows"] == args.rows, (t["rows"], p["rows"])
        print(
            f"tailor profile: {t['exact_duplicates']:,} exact and {t['near_duplicates']:,} near duplicates, "
            f"{t['personal_data']:,} personal data values"
        )
        print(
            f"not timed: writing the upload into the store took {t['receive_seconds']:.1f} s (the HTTP upload's own write); "
            f"the scanner's process, started as that copy began, needs {t['startup_seconds']:.1f} s to start "
            f"(counted, throughput would be {p['seconds'] / (t['seconds'] + t['startup_seconds']):.2f}x)"
        )
        print(
            f"throughput tailor/pandas: {p['seconds'] / t['seconds']:.2f}x (by CPU seconds {p['cpu_seconds'] / t['cpu_seconds']:.2f}x)   "
            f"peak memory tailor/pandas: {t['peak_rss_mb'] / p['peak_rss_mb']:.2f}x   (goal: throughput >= 1x, tailor peak < 300 MB)"
        )
        if "pyarrow" in results:
            a = results["pyarrow"]
            same = a["profile"] == t["profile"]
            print(
                f"throughput pyarrow/pandas: {p['seconds'] / a['seconds']:.2f}x "
                f"(by CPU seconds {p['cpu_seconds'] / a['cpu_seconds']:.2f}x)   "
                f"pyarrow/tailor: {t['seconds'] / a['seconds']:.2f}x   peak memory {a['peak_rss_mb']:.0f} MB   "
                f"the same profile as tailor's: {same}"
            )
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
