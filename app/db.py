"""Engine and sessions: SQLite (WAL, foreign keys) by default, PostgreSQL by URL."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import UpdateBase

from app.config import get_settings

# Connections one process may hold (pool_size + max_overflow), for SQLite and PostgreSQL alike.
POOL_SIZE, POOL_OVERFLOW = 10, 20
# Requests of one web process that hold a database session at once (app.http.deps.DbSession): well
# under the pool, so a request's thread never waits for a connection. Otherwise, with more requests
# in flight than the web's 40 threads, threads blocked on the pool and requests holding a
# connection while they wait for a thread stall each other until the pool's 30 s timeout.
WEB_SESSIONS = 15


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # The web's threadpool and the worker share one file: WAL lets readers run beside a
        # writer, and busy_timeout makes a writer wait instead of failing with "locked".
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # pre_ping replaces connections that died (database restart, failover); connect_timeout and
    # TCP keepalives make a vanished server an error within seconds instead of a hang.
    connect_args = {}
    if url.startswith("postgresql"):
        connect_args = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
    return create_engine(
        url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_timeout=30, connect_args=connect_args
    )


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (for tasks and the CLI)."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def rows_matched(db: Session, statement: UpdateBase) -> int:
    """Run an UPDATE or DELETE and return how many rows it matched.

    Session.execute is typed to return a plain Result whatever the statement, but for DML without
    RETURNING it returns a CursorResult, the class that carries rowcount: the cast says so."""
    return cast(CursorResult[Any], db.execute(statement)).rowcount


T = TypeVar("T")
log = logging.getLogger("tailor.db")


def run_in_session(work: Callable[[Session], T], *, attempts: int = 10, first_delay: float = 0.5, max_delay: float = 8.0) -> T:
    """Run `work(session)` and commit, retrying the whole unit when the database is unreachable
    (restart, failover, network blip): about a minute of patience before giving up. `work` must be
    safe to repeat; the job writes that use this are (conditional updates, upserts, appends of
    progress points)."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            with session_scope() as session:
                return work(session)
        except (OperationalError, InterfaceError) as exc:
            if attempt == attempts:
                raise
            log.warning("database unreachable (%s); retry %d/%d in %.1fs", type(exc).__name__, attempt, attempts - 1, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
