"""The playground's event streams: async (no thread per stream), capped per user, released when
the client goes away; 200 open streams leave the other pages fast (a real uvicorn server)."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from app import queue
from app.services import playground_streams
from app.services.playground import PlaygroundRequest, request_key, stream_key
from app.services.playground_streams import EventStream, TooManyStreams, open_slots
from tests.app.helpers import bearer
from tests.conftest import ROOT, _free_port, _subprocess_env, _wait_for, harness, health_ok


def _stored_request(workspace_id: int) -> str:
    """A playground request in Redis, as create_request stores it (no worker is asked to answer)."""
    request = PlaygroundRequest(uuid.uuid4().hex, workspace_id, "tiny-llama", "Hi", [1], True, 8, 0.0)
    queue.redis_client().set(request_key(request.id), json.dumps(request.__dict__), ex=600)
    return request.id


def test_streams_are_capped_per_user_and_unknown_requests_are_none():
    request_id = _stored_request(workspace_id=7)

    async def scenario():
        held = [await EventStream.open(request_id, 7, user_id=70, limit=3) for _ in range(3)]
        assert all(held) and await open_slots(70) == 3
        with pytest.raises(TooManyStreams, match="3 playground streams open already"):
            await EventStream.open(request_id, 7, user_id=70, limit=3)
        other_user = await EventStream.open(request_id, 7, user_id=71, limit=3)  # the cap is per user
        assert other_user is not None
        await held[0].close()
        again = await EventStream.open(request_id, 7, user_id=70, limit=3)
        assert again is not None
        for stream in [*held[1:], again, other_user]:
            await stream.close()
        assert await open_slots(70) == 0 and await open_slots(71) == 0
        assert await EventStream.open(request_id, 8, user_id=70, limit=3) is None  # another workspace's
        assert await EventStream.open("nope", 7, user_id=70, limit=3) is None
        assert await EventStream.open("../etc", 7, user_id=70, limit=3) is None

    asyncio.run(scenario())


def test_a_stream_yields_events_until_finished_and_releases_its_slot():
    request_id = _stored_request(workspace_id=9)
    redis = queue.redis_client()
    redis.xadd(stream_key(request_id), {"target": "base", "text": "Hel"})
    redis.xadd(stream_key(request_id), {"target": "base", "text": "lo"})

    async def scenario():
        stream = await EventStream.open(request_id, 9, user_id=90, limit=2)
        seen = []
        async for event in stream.events(seconds=30, block_ms=100):
            seen.append(event)
            if len(seen) == 3:  # two pieces and a keep-alive: now the answer finishes
                redis.xadd(stream_key(request_id), {"finished": "1"})
        assert seen == [{"target": "base", "text": "Hel"}, {"target": "base", "text": "lo"}, None, {"finished": "1"}]
        assert await open_slots(90) == 0

    asyncio.run(scenario())


def test_a_cancelled_stream_gives_its_slot_back_at_once():
    request_id = _stored_request(workspace_id=11)

    async def scenario():
        stream = await EventStream.open(request_id, 11, user_id=110, limit=2)

        async def read():
            async for _ in stream.events(seconds=60, block_ms=10_000):
                pass

        task = asyncio.create_task(read())
        await asyncio.sleep(0.3)  # waiting in XREAD BLOCK
        assert await open_slots(110) == 1
        task.cancel()  # what the server does when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await open_slots(110) == 0 and stream.closed

    asyncio.run(scenario())


def test_stale_slots_of_a_dead_process_stop_counting():
    request_id = _stored_request(workspace_id=12)
    redis = queue.redis_client()
    redis.zadd(playground_streams.slots_key(120), {"dead-1": time.time() - 120, "dead-2": time.time() - 120})

    async def scenario():
        stream = await EventStream.open(request_id, 12, user_id=120, limit=1)
        assert stream is not None
        await stream.close()

    asyncio.run(scenario())


def test_the_page_streams_a_finished_answer_as_server_sent_events(client, make_user, settings, monkeypatch):
    from app.db import session_scope
    from app.models import User

    user = make_user()
    with session_scope() as db:
        workspace_id = db.get(User, user.id).workspace_id
    request_id = _stored_request(workspace_id)
    for event in ({"target": "base", "text": "Hi"}, {"target": "base", "done": "1"}, {"finished": "1"}):
        queue.redis_client().xadd(stream_key(request_id), event)
    with client.stream("GET", f"/playground/{request_id}/events", headers=bearer(user.token)) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        body = "".join(stream.iter_text())
    events = ['data: {"target": "base", "text": "Hi"}', 'data: {"target": "base", "done": "1"}', 'data: {"finished": "1"}']
    assert body.split("\n\n")[:3] == events
    assert asyncio.run(open_slots(user.id)) == 0
    stranger = make_user()
    assert client.get(f"/playground/{request_id}/events", headers=bearer(stranger.token)).status_code == 404
    monkeypatch.setattr(settings, "playground_max_streams_per_user", 0)
    refused = client.get(f"/playground/{request_id}/events", headers=bearer(user.token))
    assert refused.status_code == 429 and "TAILOR_PLAYGROUND_MAX_STREAMS_PER_USER" in refused.text


# ---------------------------------------------------------------- a real server, 200 open streams

STREAMS = 200


@pytest.fixture(scope="module")
def stream_server():
    """uvicorn (`tailor serve`, one process) allowing 200 streams per user (and refusing the 201st)."""
    port = _free_port()
    log = harness().data_dir / f"streams-web-{port}.log"
    env = {**_subprocess_env(), "TAILOR_PLAYGROUND_MAX_STREAMS_PER_USER": str(STREAMS)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"

    _wait_for(lambda: health_ok(base), 60, "The web server", proc, log)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def test_200_open_streams_leave_other_pages_under_200_ms(stream_server, make_user):
    user = make_user("streams")
    from app.db import session_scope
    from app.models import User

    with session_scope() as db:
        workspace_id = db.get(User, user.id).workspace_id
    request_id = _stored_request(workspace_id)
    url = f"{stream_server}/playground/{request_id}/events"
    assert httpx.get(f"{stream_server}/api/v1/datasets", headers=bearer(user.token)).status_code == 200  # the token's first use
    pages = ["/health", "/", "/adapters", "/api/v1/datasets", "/api/v1/jobs", "/api/v1/techniques"]

    async def scenario() -> dict[str, list[float]]:
        limits = httpx.Limits(max_connections=STREAMS + 50, max_keepalive_connections=0)
        async with httpx.AsyncClient(headers=bearer(user.token), limits=limits, timeout=30) as streams:
            contexts = [streams.stream("GET", url) for _ in range(STREAMS)]
            opened = await asyncio.gather(*(c.__aenter__() for c in contexts))
            try:
                assert {r.status_code for r in opened} == {200}
                assert await open_slots(user.id) == STREAMS
                refused = await streams.get(url)
                assert refused.status_code == 429 and "TAILOR_PLAYGROUND_MAX_STREAMS_PER_USER" in refused.text
                timings: dict[str, list[float]] = {page: [] for page in pages}
                async with httpx.AsyncClient(base_url=stream_server, headers=bearer(user.token), timeout=30) as other:
                    for page in pages:
                        assert (await other.get(page)).status_code == 200  # warm
                    for _ in range(5):
                        for page in pages:
                            started = time.perf_counter()
                            response = await other.get(page)
                            timings[page].append(time.perf_counter() - started)
                            assert response.status_code == 200, (page, response.text[:200])
            finally:
                await asyncio.gather(*(c.__aexit__(None, None, None) for c in contexts), return_exceptions=True)
        return timings

    timings = asyncio.run(scenario())
    report = {page: (round(statistics.median(t) * 1000, 1), round(max(t) * 1000, 1)) for page, t in timings.items()}
    print(f"\nwith {STREAMS} open streams, median and max ms per page: {report}")
    assert all(median < 200 for median, _ in report.values()), report
    deadline = time.monotonic() + 5  # the server sees the clients go and gives every slot back
    while time.monotonic() < deadline and asyncio.run(open_slots(user.id)):
        time.sleep(0.1)
    assert asyncio.run(open_slots(user.id)) == 0
