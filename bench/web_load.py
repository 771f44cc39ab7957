"""Web load benchmark: the dashboard, a job page, the adapters page and a comparison of three
adapters under 50 concurrent users, against PostgreSQL seeded with 1,000 jobs and 100,000 metric
points.

Prints requests/s and p50/p95/p99 per page, each as a ratio to /health measured in the same run
(the floor: no database, no template), and optionally the web process's peak memory while a large
CSV upload runs beside the load.

With `--streams N` the same load runs a second time with N playground event streams held open
beside it (one user's streams, each waiting on a request no worker answers, spread over the web
processes), and both tables are printed: the goal is the same tail with and without them.

    .venv/bin/python bench/web_load.py [--users 50] [--seconds 20] [--streams 200] [--upload-mb 1024]

Needs PostgreSQL (TAILOR_BENCH_POSTGRES_URL, default postgres@127.0.0.1:5432) and only loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("TAILOR_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def seed(database_url: str, jobs: int, points_per_job: int) -> tuple[str, str, list[int], list[int]]:
    from sqlalchemy.orm import Session

    from app.db import make_engine
    from app.migrate import upgrade_database
    from app.models import Adapter, Dataset, Job, MetricPoint
    from app.services.accounts import create_user

    upgrade_database(database_url)
    engine = make_engine(database_url)
    email, password = "bench@example.com", "bench password"
    with Session(engine) as db:
        user = create_user(db, email, password)
        dataset = Dataset(
            workspace_id=user.workspace_id,
            name="bench",
            original_filename="bench.csv",
            sha256="0" * 64,
            size_bytes=1,
            row_count=1000,
            columns=["question", "answer"],
            encoding="utf-8",
            delimiter=",",
            storage_key="datasets/x/rows.csv",
        )
        db.add(dataset)
        db.flush()
        rows = [
            dict(
                workspace_id=user.workspace_id,
                dataset_id=dataset.id,
                name=f"bench job {i}",
                task="instruction",
                column_mapping={"prompt": "question", "response": "answer"},
                base_model="tiny-llama",
                technique="lora",
                params={"epochs": 2},
                status="succeeded",
                step=points_per_job,
                total_steps=points_per_job,
                epoch=2.0,
                result={},
            )
            for i in range(jobs)
        ]
        job_ids = list(db.scalars(insert(Job).returning(Job.id), rows))
        for start in range(0, len(job_ids), 100):
            points = [
                dict(
                    job_id=job_id,
                    step=s,
                    epoch=s / points_per_job * 2,
                    loss=3.0 - s / points_per_job + random.random() * 0.1,
                    learning_rate=2e-4,
                    tokens_per_second=200.0,
                )
                for job_id in job_ids[start : start + 100]
                for s in range(1, points_per_job + 1)
            ]
            db.execute(insert(MetricPoint), points)
        adapter_ids = list(
            db.scalars(
                insert(Adapter).returning(Adapter.id),
                [
                    dict(
                        workspace_id=user.workspace_id,
                        job_id=job_id,
                        name=f"adapter {job_id}",
                        technique="lora",
                        base_model="tiny-llama",
                        storage_key=f"adapters/job-{job_id}",
                        metrics={"validation_loss": 3.1},
                    )
                    for job_id in job_ids[:50]
                ],
            )
        )
        db.commit()
    engine.dispose()
    return email, password, job_ids, adapter_ids


REDIS_URL = "redis://127.0.0.1:6379/13"


def start_server(database_url: str, data_dir: str, port: int, workers: int, streams: int = 0) -> subprocess.Popen:
    env = dict(
        os.environ,
        TAILOR_DATABASE_URL=database_url,
        TAILOR_DATA_DIR=data_dir,
        TAILOR_REDIS_URL=REDIS_URL,
        PYTHONPATH=str(ROOT),
    )
    if streams:
        env["TAILOR_PLAYGROUND_MAX_STREAMS_PER_USER"] = str(streams)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> str:
    page = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    await client.post("/login", data={"email": email, "password": password, "csrf_token": csrf, "next": "/"})
    page = await client.get("/datasets/new")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


class KeepAliveClient:
    """A minimal HTTP/1.1 GET client over one keep-alive connection: a fraction of httpx's CPU per
    request, so on a 2-core machine the latencies measured are the server's, not the load
    generator's queueing."""

    def __init__(self, host: str, port: int, cookie: str):
        self.host, self.port, self.cookie = host, port, cookie
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nCookie: {self.cookie}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = head.lower()
        length = re.search(rb"\r\ncontent-length: *(\d+)", headers)
        if length:
            await self.reader.readexactly(int(length.group(1)))
        elif b"transfer-encoding: chunked" in headers:
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        if b"\r\nconnection: close" in headers:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def hammer(
    base: str, cookies, paths: list[str], users: int, seconds: float, think: float = 0.0, warmup: float = 2.0
) -> dict[str, list[float]]:
    """Each user requests the pages in turn, pausing `think` seconds (±50%) between requests.
    Users arrive spread over the first think interval, as real ones do (a synchronised burst of
    50 requests at t=0 measures the burst, not the steady state), and the first `warmup` seconds
    are not counted."""
    latencies: dict[str, list[float]] = {p.split("/")[1].split("?")[0] or "dashboard": [] for p in paths}
    host, port = base.split("//")[1].split(":")
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    start = time.monotonic()
    deadline = start + warmup + seconds

    async def user(offset: int) -> None:
        client = KeepAliveClient(host, int(port), cookie)
        await asyncio.sleep(random.uniform(0, think or 0.0))
        i = offset
        try:
            while time.monotonic() < deadline:
                path = paths[i % len(paths)]
                i += 1
                started = time.perf_counter()
                status = await client.get(path)
                elapsed = time.perf_counter() - started
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}")
                if time.monotonic() - start >= warmup:
                    latencies[path.split("/")[1].split("?")[0] or "dashboard"].append(elapsed)
                if think:
                    await asyncio.sleep(think * random.uniform(0.5, 1.5))
        finally:
            await client.close()

    await asyncio.gather(*(user(k) for k in range(users)))
    return latencies


def stored_playground_request(database_url: str, email: str) -> str:
    """A playground request in the server's Redis, as the playground stores it, that no worker answers:
    its event stream stays open (keep-alive comments every two seconds) until the client leaves."""
    import json

    import redis
    from sqlalchemy.orm import Session

    from app.db import make_engine
    from app.models import User
    from app.services.playground import PlaygroundRequest, request_key

    engine = make_engine(database_url)
    with Session(engine) as db:
        workspace_id = db.scalar(select(User.workspace_id).where(User.email == email))
    engine.dispose()
    request = PlaygroundRequest(uuid.uuid4().hex, workspace_id, "tiny-llama", "Hi", [], True, 8, 0.0)
    redis.Redis.from_url(REDIS_URL).set(request_key(request.id), json.dumps(request.__dict__), ex=3600)
    return request.id


async def open_streams(base: str, cookies, request_id: str, count: int) -> list[asyncio.StreamWriter]:
    """`count` event streams held open on their own connections (raw sockets: no client-side work
    while they wait); each is checked to answer 200 with text/event-stream."""
    host, port = base.split("//")[1].split(":")
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /playground/{request_id}/events HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0] or b"text/event-stream" not in head.lower():
            raise RuntimeError(f"a stream answered {head[:200]!r}")
        return writer

    writers = []
    for start in range(0, count, 25):  # in waves, as tabs open; not one burst of `count` connects
        writers += await asyncio.gather(*(one() for _ in range(min(25, count - start))))
    return writers


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]


def rss_watch(pid: int, stop: threading.Event, out: list[int], scanner_out: list[int]) -> None:
    """Samples the largest web process (uvicorn's supervisor or one of its workers) into out, and
    the CSV scanner's child process (python -m app.services.plain_csv), when one runs, into scanner_out."""
    import psutil

    proc = psutil.Process(pid)
    while not stop.wait(0.2):
        try:
            web, scanner = [], []
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    (scanner if "app.services.plain_csv" in p.cmdline() else web).append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    continue
            out.append(max(web))
            if scanner:
                scanner_out.append(max(scanner))
        except psutil.Error:
            return


def upload_big_csv(base: str, cookies, csrf: str, megabytes: int) -> float:
    path = Path(tempfile.gettempdir()) / f"tailor-bench-{megabytes}mb.csv"
    if not path.exists() or path.stat().st_size > megabytes * 1024 * 1024 or path.stat().st_size < megabytes * 1024 * 1024 - 4096:
        line = b'"How do I reset my password, please?","Go to Account, choose Reset password and follow the email we send you."\n'
        with open(path, "wb") as f:
            f.write(b"question,answer\n")
            for _ in range((megabytes * 1024 * 1024 - 16) // len(line)):  # stays within a limit of that size
                f.write(line)
    started = time.perf_counter()
    with open(path, "rb") as f:
        response = httpx.post(
            f"{base}/datasets", cookies=cookies, data={"csrf_token": csrf}, files={"file": ("big.csv", f, "text/csv")}, timeout=3600
        )
    if response.status_code not in (200, 204, 303):
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:300]}")
    return time.perf_counter() - started


def print_table(loads: dict[str, list[float]], seconds: float, floor_p95: float) -> None:
    print(f"{'page':<12}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p95 / health p95':>19}")
    total = 0
    for page, values in loads.items():
        total += len(values)
        print(
            f"{page:<12}{len(values) / seconds:>8.1f}{pct(values, 50) * 1000:>9.1f}{pct(values, 95) * 1000:>9.1f}"
            f"{pct(values, 99) * 1000:>9.1f}{pct(values, 95) / floor_p95:>19.1f}x"
        )
    print(f"{'all pages':<12}{total / seconds:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--think", type=float, default=1.0, help="seconds a user pauses between pages (0 = stress test)")
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--upload-mb", type=int, default=0, help="also upload a CSV of this size during the load")
    parser.add_argument("--streams", type=int, default=0, help="run the load again with this many open playground streams")
    args = parser.parse_args()

    name = f"tailor_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    data_dir = tempfile.mkdtemp(prefix="tailor-bench-")
    os.environ["TAILOR_DATA_DIR"] = data_dir
    server = None
    try:
        started = time.perf_counter()
        email, password, job_ids, adapter_ids = seed(database_url, args.jobs, args.points // args.jobs)
        print(f"seeded {args.jobs} jobs and {args.points} metric points in {time.perf_counter() - started:.1f}s")
        from tests.conftest import _free_port

        port = _free_port()
        server = start_server(database_url, data_dir, port, args.web_workers, args.streams)
        base = f"http://127.0.0.1:{port}"

        async def run() -> tuple[dict, dict, dict | None, str, httpx.Cookies]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                csrf = await sign_in(client, email, password)
                cookies = client.cookies
            floor = await hammer(base, cookies, ["/health"], args.users, args.seconds / 2, args.think)
            compare = "/compare?ids=" + ",".join(map(str, adapter_ids[:3]))
            pages = ["/", f"/jobs/{job_ids[len(job_ids) // 2]}", "/adapters", compare]
            plain = await hammer(base, cookies, pages, args.users, args.seconds, args.think)
            with_streams = None
            if args.streams:
                writers = await open_streams(base, cookies, stored_playground_request(database_url, email), args.streams)
                try:
                    with_streams = await hammer(base, cookies, pages, args.users, args.seconds, args.think)
                finally:
                    for writer in writers:
                        writer.close()
            return floor, plain, with_streams, csrf, cookies

        floor, loads, loads_with_streams, csrf, cookies = asyncio.run(run())
        floor_p95 = pct(floor["health"], 95)
        print(
            f"\n{args.users} concurrent users (think time {args.think:g}s), {args.web_workers} web processes, "
            f"{args.seconds:.0f}s; baseline /health p95 {floor_p95 * 1000:.1f} ms "
            f"({len(floor['health']) / (args.seconds / 2):.0f} req/s)"
        )
        print_table(loads, args.seconds, floor_p95)
        if loads_with_streams is not None:
            print(f"\nthe same with {args.streams} open playground streams beside it")
            print_table(loads_with_streams, args.seconds, floor_p95)

        if args.upload_mb:
            samples: list[int] = []
            scanner_samples: list[int] = []
            stop = threading.Event()
            watcher = threading.Thread(target=rss_watch, args=(server.pid, stop, samples, scanner_samples), daemon=True)
            watcher.start()
            while not samples:
                time.sleep(0.05)
            before = samples[0]
            uploader = threading.Thread(
                target=lambda: print(f"\nupload of {args.upload_mb} MB took {upload_big_csv(base, cookies, csrf, args.upload_mb):.1f}s")
            )
            uploader.start()
            during = asyncio.run(hammer(base, cookies, ["/", f"/jobs/{job_ids[0]}"], args.users, args.seconds, args.think))
            uploader.join()
            stop.set()
            values = [v for vs in during.values() for v in vs]
            print(
                f"during the upload: pages p95 {pct(values, 95) * 1000:.1f} ms; web process peak RSS {max(samples) / 2**20:.0f} MB "
                f"(idle before: {before / 2**20:.0f} MB)"
                + (f"; the CSV scanner's child process peak RSS {max(scanner_samples) / 2**20:.0f} MB" if scanner_samples else "")
            )
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
