"""One mechanism caps open streams (app/services/stream_leases.py): the playground's per user and
/v1's per token. Leases on the real Redis; a lease nobody renews (its process died) stops counting
after its lease time; a real `tailor serve` killed with SIGKILL while holding /v1 streams gives its
slots back within the lease time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from app import queue
from app.services import playground_streams, serving_limits, stream_leases
from app.services.playground import PlaygroundRequest, request_key
from tests.app.helpers import bearer
from tests.app.serving_helpers import install_base, make_adapter, scripted_engine
from tests.app.test_openai_api import CHAT, _chat, _error, _token
from tests.conftest import ROOT, _free_port, _subprocess_env, _wait_for, harness, health_ok


def _pool() -> str:
    return f"tailor:test:leases:{uuid.uuid4().hex}"


def test_leases_cap_a_pool_and_a_released_slot_is_free_again():
    async def scenario():
        client, key = queue.async_redis_client(), _pool()
        try:
            held = [await stream_leases.take(client, key, 2, 30) for _ in range(2)]
            assert all(held) and await stream_leases.count(client, key) == 2
            assert await stream_leases.take(client, key, 2, 30) is None
            assert await stream_leases.count(client, key) == 2  # a refused take leaves nothing behind
            assert held[0] is not None
            await held[0].release()
            await held[0].release()  # twice is fine
            again = await stream_leases.take(client, key, 2, 30)
            assert again is not None and await stream_leases.count(client, key) == 2
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_lease_not_renewed_stops_counting_after_its_lease_time_and_a_renewed_one_does_not():
    async def scenario():
        client, key = queue.async_redis_client(), _pool()
        try:
            dead = await stream_leases.take(client, key, 2, 1)  # its process "dies": never renewed nor released
            alive = await stream_leases.take(client, key, 2, 1)
            assert dead is not None and alive is not None
            assert await stream_leases.take(client, key, 2, 1) is None
            for _ in range(4):
                await asyncio.sleep(0.4)
                await alive.renew_if_due()
            assert await stream_leases.count(client, key) == 1  # 1.6 s later only the renewed one counts
            assert await stream_leases.take(client, key, 2, 1) is not None
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_renewing_keeps_a_lease_alive_through_a_long_wait_and_closes_what_it_wraps():
    closed = []

    async def slow_items():
        try:
            await asyncio.sleep(2.5)  # longer than the lease: only renewal keeps it
            yield "first"
            yield "second"
        finally:
            closed.append(True)

    async def scenario():
        client, key = queue.async_redis_client(), _pool()
        try:
            lease = await stream_leases.take(client, key, 1, 1)
            assert lease is not None
            items = lease.renewing(slow_items())
            waiting = asyncio.ensure_future(anext(items))
            await asyncio.sleep(1.8)
            assert await stream_leases.count(client, key) == 1 and not waiting.done()
            assert await waiting == "first"
            await items.aclose()
            assert closed == [True]
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_the_playground_cap_frees_a_dead_streams_slot_after_the_lease(settings, monkeypatch):
    monkeypatch.setattr(settings, "stream_lease_seconds", 1.0)
    request = PlaygroundRequest(uuid.uuid4().hex, 13, "tiny-llama", "Hi", [1], True, 8, 0.0)
    queue.redis_client().set(request_key(request.id), json.dumps(request.__dict__), ex=600)

    async def scenario():
        dead = await playground_streams.EventStream.open(request.id, 13, user_id=130, limit=1)  # never read, never closed
        assert dead is not None
        with pytest.raises(playground_streams.TooManyStreams, match="TAILOR_PLAYGROUND_MAX_STREAMS_PER_USER"):
            await playground_streams.EventStream.open(request.id, 13, user_id=130, limit=1)
        await asyncio.sleep(1.3)
        assert await playground_streams.open_slots(130) == 0
        live = await playground_streams.EventStream.open(request.id, 13, user_id=130, limit=1)
        assert live is not None
        await live.close()
        await dead.client.aclose()

    asyncio.run(scenario())


def test_the_v1_cap_refuses_in_openai_format_until_a_dead_streams_lease_runs_out(client, make_user, settings, monkeypatch):
    install_base()
    user = make_user()
    _, slug = make_adapter(user.id)
    monkeypatch.setattr(settings, "serve_max_streams_per_token", 1)
    monkeypatch.setattr(settings, "stream_lease_seconds", 1.0)
    token = _token(user.id)
    token_id = _token_id(token)
    asyncio.run(serving_limits.open_stream(settings, token_id))  # a stream of a process that died: never renewed
    with scripted_engine():
        error = _error(client.post(CHAT, headers=bearer(token), json=_chat(slug, stream=True)), 429)
        assert error["code"] == "too_many_streams" and "1 streaming answers open at once" in error["message"]
        time.sleep(1.3)
        with client.stream("POST", CHAT, headers=bearer(token), json=_chat(slug, content="SLOW", stream=True)) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert asyncio.run(serving_limits.open_streams(token_id)) == 0  # released when the answer ended


def _token_id(secret: str) -> int:
    from app.db import session_scope
    from app.services.accounts import token_for_secret

    with session_scope() as db:
        row = token_for_secret(db, secret)
        assert row is not None
        return row.id


# ---------------------------------------------------------------- a real server killed with SIGKILL

LEASE = 2


def test_a_killed_server_frees_its_v1_stream_slots_within_the_lease(make_user):
    install_base()
    user = make_user("killed")
    _, slug = make_adapter(user.id)
    token = _token(user.id)
    token_id = _token_id(token)
    port = _free_port()
    log = harness().data_dir / f"killed-web-{port}.log"
    env = {
        **_subprocess_env(),
        "TAILOR_STREAM_LEASE_SECONDS": str(LEASE),
        "TAILOR_SERVE_MAX_STREAMS_PER_TOKEN": "2",
        "TAILOR_SERVE_IDLE_TIMEOUT_SECONDS": "120",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: health_ok(base), 60, "The web server", proc, log)
        opened = threading.Event()
        failures: list[BaseException] = []

        def hold_stream():  # read the first chunk, then keep the connection open until the server dies
            try:
                body = _chat(slug, content="HOLD", stream=True)
                with httpx.stream("POST", base + CHAT, headers=bearer(token), json=body, timeout=60) as r:
                    assert r.status_code == 200, r.read()
                    for line in r.iter_lines():
                        if '"Hel"' in line:
                            opened.set()
            except httpx.HTTPError:
                pass  # the server was killed
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                failures.append(exc)

        with scripted_engine():
            holders = [threading.Thread(target=hold_stream, daemon=True) for _ in range(2)]
            for holder in holders:
                holder.start()
            _wait_for(lambda: asyncio.run(serving_limits.open_streams(token_id)) == 2 and opened.is_set(), 30, "Two open streams")
            refused = httpx.post(base + CHAT, headers=bearer(token), json=_chat(slug, stream=True), timeout=30)
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
            time.sleep(LEASE * 1.5)  # the server renews the leases while the streams stay open
            assert asyncio.run(serving_limits.open_streams(token_id)) == 2 and not failures
            os.killpg(proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            proc.wait(timeout=10)
            while asyncio.run(serving_limits.open_streams(token_id)) and time.monotonic() - killed < LEASE + 5:
                time.sleep(0.1)
            freed_after = time.monotonic() - killed
            for holder in holders:
                holder.join(timeout=10)
        print(f"\nslots of a SIGKILLed web process free after {freed_after:.2f} s (lease {LEASE} s)")
        assert asyncio.run(serving_limits.open_streams(token_id)) == 0 and freed_after <= LEASE + 0.5
        assert not failures
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
