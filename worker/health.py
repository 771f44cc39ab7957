"""The worker's health endpoint, for container and load-balancer probes: GET /health on
TAILOR_WORKER_HEALTH_PORT (off when 0) answers 200 when this worker reaches its database and its
broker and its presence heartbeat is recent, else 503 naming what failed. It runs in a thread of
the worker's main process, so it answers while a job trains in the pool child."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import text

log = logging.getLogger("tailor.worker")


def _database_ok() -> bool:
    from app.db import get_engine

    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means unreachable
        return False


def _broker_ok() -> bool:
    from app.queue import redis_client

    try:
        client = redis_client()
        client.connection_pool.connection_kwargs.update(socket_timeout=2, socket_connect_timeout=2)
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False


def health_report(name: str, last_beat: Callable[[], float | None], stale_after: float) -> tuple[int, dict]:
    """(HTTP status, body): every check, and 'ok' only when all pass."""
    beat = last_beat()
    age = None if beat is None else round(time.monotonic() - beat, 1)
    checks = {
        "database": "ok" if _database_ok() else "unreachable",
        "broker": "ok" if _broker_ok() else "unreachable",
        "heartbeat": "ok" if age is not None and age <= stale_after else "stale",
    }
    healthy = all(value == "ok" for value in checks.values())
    return (200 if healthy else 503), {"status": "ok" if healthy else "degraded", "worker": name, "heartbeat_age_seconds": age, **checks}


def start_health_server(port: int, host: str, name: str, last_beat: Callable[[], float | None], stale_after: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] != "/health":
                self.send_error(404)
                return
            status, body = health_report(name, last_beat, stale_after)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args) -> None:  # probes every few seconds would flood the log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="tailor-health", daemon=True).start()
    log.info("worker %s: health endpoint on http://%s:%s/health", name, host, port)
    return server
