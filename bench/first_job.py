"""The first ten minutes, timed end to end with real processes (issue 15, parts 4 and 5).

    .venv/bin/python bench/first_job.py [--data-dir DIR] [--port N] [--convert] [--keep]
                                         [--allocator auto|jemalloc|system] [--second-job]

What a new user does, as the browser does it:
1. `tailor up` on a fresh DATA_DIR (its own SQLite database, embedded broker, artifacts and
   calibration cache: a fresh worker has measured nothing). The demo model is linked from
   var/models/smollm2-135m-instruct to skip the one-off conversion (`--convert` converts it,
   as `tailor up` would on a first start).
2. Sign in as the first-run administrator (var/initial-admin-password.txt of that DATA_DIR) and
   upload data/samples/northwind_support.csv through the upload form.
3. Open the dataset page once the training worker is on the board (and say whether it had
   calibrated by then), read the training form as the browser submits it with the preselected
   preset applied (static/app.js applyPreset), and the estimate the page shows (time, peak memory)
   and the one the form's htmx request answers for those values.
4. Press Start training (POST /jobs with those fields), poll until the job succeeded and the
   automatic evaluation is done, download the zip.

`--second-job` then presses Start training again on the same form: the estimate of a worker that
has measured a job of this base model and technique, and whose evaluation finds the base model's
answers cached.

Printed: click -> downloadable split into phases, estimate vs actual (time and peak memory), the
evaluation's metrics with 95% intervals and which show the adapter better with intervals apart,
and the load average over the run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "data" / "samples" / "northwind_support.csv"
DEMO_KEY = "smollm2-135m-instruct"
STORED_KEYS = (
    "seconds", "setup_seconds", "train_seconds", "held_out_seconds", "evaluation_seconds", "total_seconds",
    "peak_memory_bytes", "steps", "tokens", "source", "base_answers_cached",
)  # fmt: skip

from bench.first_job_pages import (  # noqa: E402 - after the path
    apply_preset,
    as_form,
    better_apart,
    form_fields,
    json_script,
    percent_error,
    shown_seconds,
    text_of,
)


@dataclass
class Timeline:
    """Seconds since the click for each observed moment (None when not seen)."""

    job_started: float | None = None  # claimed by the worker
    first_step: float | None = None  # first progress row (after loading, tokenizing and one step)
    last_step: float | None = None  # last progress row (training and held-out checks done)
    job_finished: float | None = None  # adapter saved and packaged: the zip is downloadable
    evaluation_started: float | None = None
    evaluation_done: float | None = None
    downloaded: float | None = None
    train_seconds: float | None = None  # the worker's own count (steps and held-out checks)
    held_out_seconds: float | None = None
    steps: int = 0

    def phases(self) -> list[tuple[str, float | None]]:
        """Click -> evaluated adapter, split into consecutive phases that add up to the whole."""

        def gap(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else b - a

        one_step = (self.train_seconds or 0) / max(1, self.steps) if self.train_seconds else 0.0
        loading = None if self.first_step is None or self.job_started is None else self.first_step - self.job_started - one_step
        training = None if self.first_step is None or self.last_step is None else self.last_step - self.first_step + one_step
        return [
            ("queue wait (click -> worker claims the job)", self.job_started),
            ("model load + tokenize (claim -> first step starts)", loading),
            ("training steps + held-out checks", training),
            ("  of which held-out checks (worker's count)", self.held_out_seconds),
            ("saving + packaging (last step -> job succeeded)", gap(self.last_step, self.job_finished)),
            ("evaluation wait (succeeded -> evaluation starts)", gap(self.job_finished, self.evaluation_started)),
            ("automatic evaluation", gap(self.evaluation_started, self.evaluation_done)),
            ("download", gap(self.evaluation_done, self.downloaded)),
        ]


@dataclass
class LoadSampler:
    """os.getloadavg() every few seconds on a thread, for the report."""

    every: float = 5.0
    samples: list[float] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        s = self.samples
        spread = f"min {min(s):.1f} / mean {sum(s) / len(s):.1f} / max {max(s):.1f}"
        return f"1-min load average {spread} ({len(s)} samples, {os.cpu_count()} cores)"


# ---------------------------------------------------------------- the run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    out, frontier = [], [pid]
    children_of: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children_of.setdefault(ppid, []).append(int(entry.name))
    while frontier:
        kids = children_of.get(frontier.pop(), [])
        out += kids
        frontier += kids
    return out


class RssSampler:
    """The largest resident set of any process under `tailor up` whose command line is the training
    worker's (its Celery pool child trains), sampled twice a second: an outside check of the
    worker's own VmHWM figure."""

    def __init__(self, root_pid: int):
        self.root_pid = root_pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in _descendants(self.root_pid):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    if "worker" not in cmd or "gpu,cpu" not in cmd:
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
                except OSError:
                    continue
            self._stop.wait(0.5)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)


def _wait(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _query(db_path: Path, sql: str, args=()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _timestamp(value) -> float | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run(args: argparse.Namespace) -> int:
    import httpx

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="tailor-first-job-")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        print(f"{data_dir} is not empty: a first job needs a fresh DATA_DIR", file=sys.stderr)
        return 2
    if not args.convert:
        source = (ROOT / "var" / "models" / DEMO_KEY).resolve()
        (data_dir / "models").mkdir()
        (data_dir / "models" / DEMO_KEY).symlink_to(source)
        print(f"demo model linked from {source} (conversion skipped; --convert to include it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env.update(TAILOR_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", TAILOR_WORKER_ALLOCATOR=args.allocator)
    port = args.port or _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = data_dir / "tailor-up.log"
    print(f"DATA_DIR {data_dir}; log {log_path}; {base}")
    loads = LoadSampler().start()
    started = time.monotonic()
    with open(log_path, "wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up", "--port", str(port), "--host", "127.0.0.1"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    rss = RssSampler(up.pid).start()
    db_path = data_dir / "tailor.db"
    try:
        http = httpx.Client(base_url=base, timeout=120, follow_redirects=True)
        _wait("the web app", lambda: _get_ok(http, "/login"), 300)
        web_up = time.monotonic() - started
        _wait("the first-run password", lambda: (data_dir / "initial-admin-password.txt").is_file(), 60)
        email, password = (data_dir / "initial-admin-password.txt").read_text().split()[:2]
        page = http.get("/login").text
        answer = http.post("/login", data={"email": email, "password": password, "next": "/", "csrf_token": _csrf(page)})
        answer.raise_for_status()
        page = http.get("/datasets/new").text
        with open(SAMPLE, "rb") as f:
            answer = http.post("/datasets", data={"csrf_token": _csrf(page)}, files={"file": (SAMPLE.name, f, "text/csv")})
        answer.raise_for_status()
        dataset_id = int(re.search(r"/datasets/(\d+)", str(answer.url)).group(1))  # type: ignore[union-attr]
        signed_in = time.monotonic() - started

        def training_worker():
            rows = _query(db_path, "SELECT name, calibrated_flops FROM workers WHERE queues LIKE '%gpu%' AND stopped_at IS NULL")
            return rows[0] if rows else None

        _wait("the training worker on the board", training_worker, 300)
        on_board = time.monotonic() - started
        if args.wait_calibration:
            _wait("the worker's calibration", lambda: (training_worker() or (None, None))[1], 300)
        worker_name, flops = training_worker()
        form_opened = time.monotonic() - started
        print(
            f"web up {web_up:.0f}s, signed in + uploaded {signed_in:.0f}s, training worker on the board {on_board:.0f}s, "
            f"form opened {form_opened:.0f}s (worker calibrated then: {f'yes, {flops:.3g} FLOP/s' if flops else 'no'})"
        )
        ((allocator,),) = _query(db_path, "SELECT allocator FROM workers WHERE name = ?", (worker_name,))
        print(f"training worker {worker_name} runs on allocator {allocator!r} (--allocator {args.allocator})")
        runs = [_one_job(http, db_path, dataset_id, args.timeout)]
        if args.second_job and runs[0] is not None:  # the same form again: measured figures, the base side cached
            runs.append(_one_job(http, db_path, dataset_id, args.timeout))
    finally:
        loads.stop()
        rss.stop()
        if not args.keep_running:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
    if any(r is None for r in runs):
        return 1
    for number, job_run in enumerate(runs, 1):
        if len(runs) > 1:
            print(f"\n######## job {number} of {len(runs)}" + (" (the same form again, same data and split)" if number > 1 else ""))
        _report(job_run, loads, flops, worker_name, rss.peak)
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        print(f"kept {data_dir}")
    return 0


@dataclass
class JobRun:
    """One click -> downloaded adapter, as observed."""

    t: Timeline
    result: dict
    estimate: dict
    shown_on_load: tuple[str, str]
    shown: tuple[str, str]
    evaluation: dict
    measured: list
    zip_size: int


def _one_job(http, db_path: Path, dataset_id: int, timeout: float) -> JobRun | None:
    """Open the dataset page, apply its preselected preset, read the estimate, press Start training
    and wait for the evaluated adapter; None when the job or its evaluation failed or timed out."""
    page = http.get(f"/datasets/{dataset_id}").text
    shown_on_load = (text_of(page, "estimate-time"), text_of(page, "estimate-memory"))
    fields, preset = apply_preset(form_fields(page, "train-form"), json_script(page, "train-presets"))
    csrf = dict(fields)["csrf_token"]
    estimate_page = http.post("/jobs/estimate", data=as_form(fields), headers={"HX-Request": "true", "X-CSRF-Token": csrf}).text
    shown = (text_of(estimate_page, "estimate-time"), text_of(estimate_page, "estimate-memory"))

    click = time.monotonic()
    answer = http.post("/jobs", data=as_form(fields))
    answer.raise_for_status()
    job_id = int(re.search(r"/jobs/(\d+)", str(answer.url)).group(1))  # type: ignore[union-attr]
    wall_click = time.time()
    print(f"job {job_id}: preset values the form applied: {preset}")

    t = Timeline()
    adapter_id = None
    deadline = click + timeout
    while time.monotonic() < deadline:
        now = time.time() - wall_click
        ((status, job_started, job_finished, result_json),) = _query(
            db_path, "SELECT status, started_at, finished_at, result FROM jobs WHERE id = ?", (job_id,)
        )
        if job_started and t.job_started is None:
            t.job_started = _timestamp(job_started) - wall_click  # type: ignore[operator]
        points = _query(db_path, "SELECT MIN(created_at), MAX(created_at), MAX(step) FROM metric_points WHERE job_id = ?", (job_id,))
        if points and points[0][0]:
            t.first_step = _timestamp(points[0][0]) - wall_click  # type: ignore[operator]
            t.last_step = _timestamp(points[0][1]) - wall_click  # type: ignore[operator]
        if status in ("failed", "cancelled"):
            print(f"job {job_id} {status}: {_query(db_path, 'SELECT error FROM jobs WHERE id = ?', (job_id,))}")
            return None
        if status == "succeeded" and t.job_finished is None:
            t.job_finished = _timestamp(job_finished) - wall_click  # type: ignore[operator]
            result = json.loads(result_json)
            t.train_seconds, t.steps = result.get("train_seconds"), int(result.get("steps") or 0)
            ((adapter_id,),) = _query(db_path, "SELECT id FROM adapters WHERE job_id = ?", (job_id,))
        if adapter_id is not None:
            ((state, error),) = _query(db_path, "SELECT evaluation_state, evaluation_error FROM adapters WHERE id = ?", (adapter_id,))
            if state == "running" and t.evaluation_started is None:
                t.evaluation_started = now
            if state == "failed":
                print(f"evaluation failed: {error}")
                return None
            if state == "done":
                t.evaluation_done = now
                t.evaluation_started = t.evaluation_started if t.evaluation_started is not None else t.job_finished
                break
        time.sleep(1.0)
    else:
        print(f"timed out after {timeout:.0f}s")
        return None
    zip_bytes = http.get(f"/adapters/{adapter_id}/download")
    zip_bytes.raise_for_status()
    t.downloaded = time.time() - wall_click
    ((result_json,),) = _query(db_path, "SELECT result FROM jobs WHERE id = ?", (job_id,))
    ((metrics_json,),) = _query(db_path, "SELECT metrics FROM adapters WHERE id = ?", (adapter_id,))
    measured = _query(db_path, "SELECT tokens, train_seconds, tokens_per_second FROM throughput_measurements WHERE job_id = ?", (job_id,))
    result = json.loads(result_json)
    if measured and result.get("train_seconds"):  # the job's training time less its steps' (throughput_measurements)
        t.held_out_seconds = float(result["train_seconds"]) - float(measured[0][1])
    evaluation = json.loads(metrics_json).get("evaluation") or {}
    return JobRun(t, result, result.get("estimate") or {}, shown_on_load, shown, evaluation, measured, len(zip_bytes.content))


def _get_ok(http, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if match is None:
        raise ValueError("no CSRF token in the page")
    return match.group(1)


def _report(run: JobRun, loads, flops, worker_name, rss_peak):
    t, result, estimate, shown_on_load, shown, evaluation = run.t, run.result, run.estimate, run.shown_on_load, run.shown, run.evaluation
    measured, zip_size = run.measured, run.zip_size
    total = t.evaluation_done
    print("\n== click -> downloadable (training and automatic evaluation done) ==")
    for label, seconds in t.phases():
        print(f"  {label:<52} {'' if seconds is None else f'{seconds:7.1f} s'}")
    print(f"  {'adapter zip downloadable (job succeeded)':<52} {t.job_finished:7.1f} s")
    print(f"  {'click -> evaluated adapter downloaded':<52} {t.downloaded:7.1f} s  ({t.downloaded / 60:.2f} min; zip {zip_size:,} bytes)")
    print("\n== estimate (shown before training) vs actual ==")
    print(f"  page load showed: time {shown_on_load[0]!r}, memory {shown_on_load[1]!r}")
    print(f"  for the preset's values (htmx): time {shown[0]!r}, memory {shown[1]!r}")
    print(
        "  stored estimate:",
        json.dumps({k: estimate.get(k) for k in STORED_KEYS}),
    )
    job_seconds = t.job_finished - (t.job_started or 0)  # type: ignore[operator]
    rows = [
        ("job time (claim -> succeeded)", estimate.get("seconds"), job_seconds),
        ("click -> evaluated", estimate.get("total_seconds"), total),
        ("automatic evaluation", estimate.get("evaluation_seconds"), evaluation.get("seconds")),
        ("shown time vs click -> evaluated", shown_seconds(shown[0]), total),
        (
            "peak memory GB (worker's VmHWM)",
            (estimate.get("peak_memory_bytes") or 0) / 1024**3,
            result.get("peak_memory_bytes", 0) / 1024**3,
        ),
        ("peak memory GB (outside RSS sample)", (estimate.get("peak_memory_bytes") or 0) / 1024**3, rss_peak / 1024**3),
    ]
    for label, guessed, actual in rows:
        error = percent_error(guessed, actual)
        g = "—" if guessed is None else f"{guessed:8.2f}"
        a = "—" if actual is None else f"{actual:8.2f}"
        print(f"  {label:<38} estimate {g}  actual {a}  error {'—' if error is None else f'{error:+.0f}%'}")
    print(f"  steps {result.get('steps')}, tokens {result.get('tokens_seen')}, train_seconds {result.get('train_seconds'):.1f}")
    if measured:
        print(f"  measured throughput recorded: {measured[0][2]:.1f} tokens/s ({measured[0][0]} tokens in {measured[0][1]:.1f} s)")
    print(
        f"  worker {worker_name}: calibrated {flops:.3g} FLOP/s"
        if flops
        else f"  worker {worker_name}: not calibrated when the form opened"
    )
    print(
        f"\n== automatic evaluation on {evaluation.get('rows')} held-out rows ({evaluation.get('seconds')} s by its own count, "
        f"{evaluation.get('base_seconds')} s of it the base model's side) =="
    )
    for metric, a in (evaluation.get("adapter") or {}).items():
        b = (evaluation.get("base") or {}).get(metric)
        fmt = lambda d: f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]" if d else "—"  # noqa: E731
        print(f"  {metric:<22} adapter {fmt(a):<28} base {fmt(b)}")
    apart = better_apart(evaluation)
    print(f"  adapter better with non-overlapping intervals: {', '.join(apart) if apart else 'NONE'}")
    print(f"\n== load == {loads.summary()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="a fresh, empty DATA_DIR (default: a new temporary folder)")
    parser.add_argument("--port", type=int)
    parser.add_argument("--convert", action="store_true", help="convert the demo model as a first `tailor up` does (not linked)")
    parser.add_argument(
        "--no-wait-calibration", dest="wait_calibration", action="store_false", help="open the form as soon as the worker is on the board"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds from the click before giving up")
    parser.add_argument("--keep", action="store_true", help="keep the DATA_DIR afterwards")
    parser.add_argument("--keep-running", action="store_true", help="leave `tailor up` running (its pid is printed)")
    parser.add_argument(
        "--allocator", choices=("auto", "jemalloc", "system"), default="auto", help="TAILOR_WORKER_ALLOCATOR of the fresh install"
    )
    parser.add_argument(
        "--second-job",
        action="store_true",
        help="then the same form again: an estimate from the first job's measurements, the base model's answers cached",
    )
    args = parser.parse_args()
    # A background run ignores SIGINT; SIGTERM stops it through its `finally` (which stops `tailor up`).
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
