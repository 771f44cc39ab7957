"""The worker's health endpoint answers from its main process and follows what the worker needs."""

from __future__ import annotations

import httpx

from tests.conftest import _free_port
from tests.reliability.test_faults import wait_until


def _health(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=10)
    except httpx.HTTPError:
        return None


def test_the_worker_health_endpoint_follows_its_broker(workers, own_redis):
    port = _free_port()
    workers.start("probe@tests", TAILOR_WORKER_HEALTH_PORT=port)
    url = f"http://127.0.0.1:{port}/health"
    healthy = wait_until(lambda: (r := _health(url)) is not None and r.status_code == 200 and r.json(), 30, "a healthy answer")
    assert healthy["status"] == "ok" and healthy["worker"] == "probe@tests"
    assert (healthy["database"], healthy["broker"], healthy["heartbeat"]) == ("ok", "ok", "ok")

    own_redis.stop()
    down = _health(url)
    assert down.status_code == 503 and down.json()["broker"] == "unreachable" and down.json()["status"] == "degraded"
    assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=10).status_code == 404

    own_redis.start()
    wait_until(lambda: (r := _health(url)) is not None and r.status_code == 200, 30, "healthy again after Redis is back")
