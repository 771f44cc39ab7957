"""Caps on open streams, counted across web processes in Redis with leases: the playground's per
user (TAILOR_PLAYGROUND_MAX_STREAMS_PER_USER) and /v1's per API token
(TAILOR_SERVE_MAX_STREAMS_PER_TOKEN) both hold their slots here.

A pool of slots is one sorted set (its key names the holder: a user, a token); each member is one
open stream, scored by the time its lease runs out. Taking a slot drops the expired leases, adds
the new one and counts; a stream renews its lease while it is open (every third of the lease) and
releases it when it ends or its client goes away. A stream whose process died stops renewing, so
its slot stops counting once its lease runs out (TAILOR_STREAM_LEASE_SECONDS): nothing is held for
longer than that by a killed web process.

Every call takes the redis.asyncio client to use, so a caller can run them on a connection of its
own or a shared pool."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


async def take(client: Any, key: str, limit: int, seconds: float) -> Lease | None:
    """A slot of the pool `key` leased for `seconds`, or None when `limit` live leases are held already."""
    slot, now = uuid.uuid4().hex, time.time()
    async with client.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {slot: now + seconds})
        pipe.zcard(key)
        pipe.expire(key, _key_ttl(seconds))
        _, _, held, _ = await pipe.execute()
    if held > limit:
        await client.zrem(key, slot)
        return None
    return Lease(client, key, slot, seconds)


async def count(client: Any, key: str) -> int:
    """Live leases in the pool `key` (those not run out)."""
    return int(await client.zcount(key, time.time(), "+inf"))


def _key_ttl(seconds: float) -> int:
    return max(1, int(seconds * 4))  # a pool nobody renews goes away by itself


@dataclass
class Lease:
    """One held slot; renew it while the stream is open, release it when the stream ends."""

    client: Any
    key: str
    slot: str
    seconds: float
    renewed: float = field(default_factory=time.monotonic)
    released: bool = False

    @property
    def renew_every(self) -> float:
        return self.seconds / 3

    async def renew(self) -> None:
        if self.released:
            return
        self.renewed = time.monotonic()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key, {self.slot: time.time() + self.seconds})
            pipe.expire(self.key, _key_ttl(self.seconds))
            await pipe.execute()

    async def renew_if_due(self) -> None:
        if time.monotonic() - self.renewed >= self.renew_every:
            await self.renew()

    async def release(self) -> None:
        """Give the slot back; safe to call twice, and while cancelled (shielded, bounded)."""
        if self.released:
            return
        self.released = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self.client.zrem(self.key, self.slot)

    async def renewing(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """`items` as they come, the lease renewed while each next one is awaited (however long
        the wait) and after each one when due. Cancelling this cancels the wait for `items`;
        closing it closes `items`."""
        try:
            while True:
                step = asyncio.ensure_future(anext(items))
                try:
                    while not (await asyncio.wait({step}, timeout=self.renew_every))[0]:
                        await self.renew()
                except BaseException:
                    step.cancel()
                    with anyio.CancelScope(shield=True):
                        await asyncio.gather(step, return_exceptions=True)
                    raise
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                yield item
                await self.renew_if_due()
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
