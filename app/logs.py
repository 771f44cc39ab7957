"""Structured logs: every line carries the job id it concerns (or '-'), as key=value text or
JSON lines (TAILOR_LOG_FORMAT=json) for log collectors."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_job_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("tailor_job_id", default=None)


@contextmanager
def job_log_context(job_id: int) -> Iterator[None]:
    """Every log line written inside (in this thread) names the job."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def name_job_for_process(job_id: int) -> None:
    """Every later log line of this thread names the job, for the rest of the process (a rank of a
    distributed job lives for one job only)."""
    _job_id.set(job_id)


class JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = _job_id.get()
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        job_id = getattr(record, "job_id", None)
        job = job_id if job_id is not None else "-"
        line = f"{stamp} {record.levelname:<7} {record.name} job={job} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "job_id": getattr(record, "job_id", None),
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", fmt: str = "text") -> None:
    """Route the root logger to stderr with the job id on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(JobIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
