"""Open playground event streams, read without a thread: each stream is an async generator over
async Redis (XREAD BLOCK on a connection of its own), so hundreds of open streams cost the web
process a few coroutines and sockets, not its worker threads.

A user holds at most `limit` streams at once, counted across web processes with leases
(app/services/stream_leases.py, the same mechanism as /v1's cap per token): a stream renews its
lease while it waits for events; one whose process died stops renewing and no longer counts after
TAILOR_STREAM_LEASE_SECONDS. When the client goes away, the server cancels the generator and its
slot and connection are released at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from app import queue
from app.config import get_settings
from app.services import stream_leases
from app.services.playground import PlaygroundError, PlaygroundRequest, request_key, stream_key

BLOCK_MS = 2000  # a keep-alive comment goes out after each quiet wait (well inside the socket timeout)


class TooManyStreams(PlaygroundError):
    """The user already holds the most open streams allowed."""


def slots_key(user_id: int) -> str:
    return f"tailor:playground:open-streams:{user_id}"


class EventStream:
    """One open stream of a playground request's events, holding one of its user's slots."""

    def __init__(self, client: Any, request_id: str, user_id: int, lease: stream_leases.Lease):
        self.client = client
        self.request_id = request_id
        self.user_id = user_id
        self.lease = lease
        self.closed = False

    @classmethod
    async def open(cls, request_id: str, workspace_id: int, user_id: int, limit: int) -> EventStream | None:
        """The stream of a request of this workspace (None when unknown, expired or another
        workspace's); raises TooManyStreams when the user holds `limit` open streams already."""
        if not request_id.isalnum():
            return None
        client = queue.async_redis_client()
        try:
            raw = await client.get(request_key(request_id))
            if raw is None or PlaygroundRequest(**json.loads(raw)).workspace_id != workspace_id:
                await _quietly_close(client)
                return None
            lease = await stream_leases.take(client, slots_key(user_id), limit, get_settings().stream_lease_seconds)
            if lease is None:
                raise TooManyStreams(
                    f"You have {limit} playground streams open already, the most allowed at once "
                    "(TAILOR_PLAYGROUND_MAX_STREAMS_PER_USER). Close a playground tab, or wait for its answers to finish."
                )
        except BaseException:
            await _quietly_close(client)
            raise
        return cls(client, request_id, user_id, lease)

    async def events(self, seconds: float, block_ms: int = BLOCK_MS) -> AsyncIterator[dict[str, Any] | None]:
        """The request's events as they arrive ({'target', 'text'}, {'target', 'done'}, then
        {'finished'} or {'error'}), None after each quiet wait (for a keep-alive); ends after the
        last event or `seconds`, releasing the slot however it ends (a client gone away included)."""
        last, deadline = "0", time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                await self.lease.renew_if_due()
                block = max(1, min(block_ms, int(self.lease.renew_every * 1000)))  # wake in time to renew
                entries = await self.client.xread({stream_key(self.request_id): last}, count=200, block=block)
                for _, items in entries:
                    for event_id, event in items:
                        last = event_id
                        yield event
                        if event.get("finished") or event.get("error"):
                            return
                yield None
            yield {"error": f"No answer within {seconds / 60:g} minutes; is an inference worker running?"}
        finally:
            await self.close()

    async def close(self) -> None:
        """Give the slot back and close the connection; safe to call twice, and while cancelled."""
        if self.closed:
            return
        self.closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self.lease.release()
            finally:
                await _quietly_close(self.client)


async def open_slots(user_id: int) -> int:
    """How many streams the user holds open now (live leases only)."""
    client = queue.async_redis_client()
    try:
        return await stream_leases.count(client, slots_key(user_id))
    finally:
        await client.aclose()


async def _quietly_close(client: Any) -> None:
    try:
        await client.aclose()
    except Exception:  # noqa: BLE001 - a connection already broken is closed enough
        pass
