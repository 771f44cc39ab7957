"""Per-token limits on /v1: requests and tokens per minute (the `limits` library's moving window
on the broker's Redis) and a cap on open streams (leases, app/services/stream_leases.py). Asynchronous: the /v1 routes await them.

Redis clients are bound to an event loop, so each loop gets its own (one per web process in
production; the test client may run several)."""

from __future__ import annotations

import asyncio
import math
import time
import weakref

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from app import queue
from app.config import Settings
from app.services import stream_leases
from app.services.serving_protocol import PREFIX

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MovingWindowRateLimiter] = weakref.WeakKeyDictionary()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object] = weakref.WeakKeyDictionary()


class LimitExceeded(Exception):
    """A limit was reached; `retry_after` seconds until it is not."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = max(1, retry_after)


def async_redis():
    """A redis.asyncio client on the broker's Redis, one per event loop."""
    import redis.asyncio as aredis

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aredis.Redis.from_url(queue.redis_url(), decode_responses=True)
        _clients[loop] = client
    return client


def _limiter() -> MovingWindowRateLimiter:
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = MovingWindowRateLimiter(
            RedisStorage(queue.limits_storage_uri(asynchronous=True), implementation="redispy", key_prefix=f"{PREFIX}:limits")
        )
        _limiters[loop] = limiter
    return limiter


async def _retry_after(item: RateLimitItemPerMinute, *key: str) -> int:
    stats = await _limiter().get_window_stats(item, *key)
    return math.ceil(stats.reset_time - time.time())


async def check_request(settings: Settings, token_id: int) -> None:
    """Count this request against the token's requests per minute, and refuse it while the token's
    tokens per minute are used up. LimitExceeded names the limit."""
    limiter = _limiter()
    if settings.serve_requests_per_minute > 0:
        item = RateLimitItemPerMinute(settings.serve_requests_per_minute)
        if not await limiter.hit(item, "requests", str(token_id)):
            raise LimitExceeded(
                f"Rate limit reached: {settings.serve_requests_per_minute} requests per minute for this token. Retry shortly.",
                await _retry_after(item, "requests", str(token_id)),
            )
    if settings.serve_tokens_per_minute > 0:
        item = RateLimitItemPerMinute(settings.serve_tokens_per_minute)
        if not await limiter.test(item, "tokens", str(token_id)):
            raise LimitExceeded(
                f"Rate limit reached: {settings.serve_tokens_per_minute} tokens per minute for this token. Retry shortly.",
                await _retry_after(item, "tokens", str(token_id)),
            )


async def record_tokens(settings: Settings, token_id: int, tokens: int) -> None:
    """Count the tokens an answer used (prompt + completion) against the token's tokens per minute."""
    if settings.serve_tokens_per_minute <= 0 or tokens <= 0:
        return
    item = RateLimitItemPerMinute(settings.serve_tokens_per_minute)
    limiter = _limiter()
    remaining = (await limiter.get_window_stats(item, "tokens", str(token_id))).remaining
    if remaining > 0:  # a moving window refuses a hit larger than what is left: take what is left
        await limiter.hit(item, "tokens", str(token_id), cost=min(tokens, remaining))


def streams_key(token_id: int) -> str:
    return f"{PREFIX}:open-streams:{token_id}"


async def open_stream(settings: Settings, token_id: int) -> stream_leases.Lease:
    """Lease one of the token's open-stream slots (app/services/stream_leases.py); LimitExceeded when
    all are taken. Renew it while the stream runs and release it when the stream ends."""
    limit = settings.serve_max_streams_per_token
    lease = await stream_leases.take(async_redis(), streams_key(token_id), limit, settings.stream_lease_seconds)
    if lease is None:
        raise LimitExceeded(f"Too many open streams: this token may hold {limit} streaming answers open at once.", 5)
    return lease


async def open_streams(token_id: int) -> int:
    """How many streams the token holds open now (live leases only)."""
    return await stream_leases.count(async_redis(), streams_key(token_id))
