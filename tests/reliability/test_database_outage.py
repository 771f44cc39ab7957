"""The database vanishes for a few seconds while a job trains: the worker retries its writes and
the job still completes, never stuck in 'running'. PostgreSQL only (SQLite is a file)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy.engine import make_url

from tests.reliability.tcp_proxy import TcpProxy
from tests.reliability.test_faults import adapter_count, dataset_id, job_state, submit, wait_until, wake  # noqa: F401 (fixture)


@pytest.mark.skipif(
    not os.environ.get("TAILOR_DATABASE_URL", "").startswith("postgresql"),
    reason="needs PostgreSQL: run with TAILOR_TEST_DATABASE=postgresql (scripts/test does)",
)
def test_a_job_survives_a_database_outage(workers, own_redis, dataset_id, settings):  # noqa: F811
    url = make_url(os.environ["TAILOR_DATABASE_URL"])
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        # The outage starts at the first step, so that it falls while the job trains (waiting for
        # step 3, one CI run on a fast CPU saw the job finish untouched by it: no retry in the log).
        job_id = submit(dataset_id, settings, epochs=2, batch_size=2)
        workers.start("outage@tests", TAILOR_DATABASE_URL=via_proxy)
        wake(own_redis.url, job_id)
        wait_until(lambda: job_state(job_id).step >= 1, 120, "training to make progress")
        proxy.outage(6)
        done = wait_until(lambda: (j := job_state(job_id)).is_finished and j, 300, "the job to finish after the outage")
        assert done.status == "succeeded", done.error
        assert done.attempt == 1
        assert adapter_count(job_id) == 1
        log = (workers.log_dir / "outage@tests.log").read_text()
        assert "database unreachable" in log
    finally:
        proxy.close()
