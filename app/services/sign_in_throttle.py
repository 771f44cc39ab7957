"""Sign-in throttling with the `limits` library on the broker's Redis (moving windows, shared by
every web process). Checked before any password hash is computed:

- per account (the normalised email, whether or not such an account exists, so the answer never
  reveals accounts): every attempt takes a slot in each window of TAILOR_SIGN_IN_ACCOUNT_LIMITS
  (atomically, so parallel guesses cannot slip through together); a successful sign-in frees them.
  Several windows ("5/minute;20/hour;100/day") make the lockout grow as failures go on.
- per client address: failed attempts only (colleagues behind one NAT who sign in correctly never
  lock each other out), TAILOR_SIGN_IN_ADDRESS_LIMITS.

When Redis cannot be reached the check lets the attempt through and logs it: sign-in keeps working
while the broker restarts, still behind Argon2id's cost."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from app import queue
from app.config import get_settings

log = logging.getLogger("tailor.sign_in")
KEY_PREFIX = "tailor-sign-in"


@dataclass(frozen=True)
class Throttled:
    """Sign-in refused for now: wait `retry_after` seconds."""

    retry_after: int

    @property
    def message(self) -> str:
        wait = f"{self.retry_after} seconds" if self.retry_after < 120 else f"{math.ceil(self.retry_after / 60)} minutes"
        return f"Too many failed sign-ins for this account or from this address. Wait {wait} and try again."


@lru_cache(maxsize=4)
def _limiter(uri: str) -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(RedisStorage(uri, key_prefix=KEY_PREFIX, socket_timeout=2))


@lru_cache(maxsize=16)
def _items(spec: str) -> tuple[RateLimitItem, ...]:
    return parse_limits(spec)


def parse_limits(spec: str) -> tuple[RateLimitItem, ...]:
    """'5/minute;20/hour' → the `limits` items; raises ValueError for a malformed string."""
    return tuple(parse_many(spec.replace(";", ","))) if spec.strip() else ()


def _account_key(email: str) -> str:
    return "account:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _address_key(address: str) -> str:
    return "address:" + address


def _retry_after(limiter: MovingWindowRateLimiter, items: tuple[RateLimitItem, ...], key: str) -> int:
    now = time.time()
    waits = [limiter.get_window_stats(item, key).reset_time - now for item in items]
    return max(1, math.ceil(max(waits, default=1)))


def check_before_sign_in(email: str, address: str) -> Throttled | None:
    """Called before the password is checked: None to go ahead (the attempt is counted against the
    account), or how long to wait."""
    settings = get_settings()
    account_items, address_items = _items(settings.sign_in_account_limits), _items(settings.sign_in_address_limits)
    try:
        limiter = _limiter(queue.limits_storage_uri())
        address_key = _address_key(address)
        full = [item for item in address_items if not limiter.test(item, address_key)]
        if full:
            return Throttled(_retry_after(limiter, tuple(full), address_key))
        account_key = _account_key(email)
        # Attempts while locked out are not counted (the lockout does not grow by itself); of those
        # let through, each takes its slot atomically, so a burst cannot overshoot a window.
        refused = [item for item in account_items if not limiter.test(item, account_key)]
        if not refused:
            refused = [item for item in account_items if not limiter.hit(item, account_key)]
        if refused:
            return Throttled(_retry_after(limiter, tuple(refused), account_key))
    except (RedisError, StorageError, OSError):  # Redis unreachable: sign-in still works (see the module doc)
        log.exception("Sign-in throttling is unavailable (Redis unreachable); letting the attempt through.")
    return None


def record_outcome(email: str, address: str, *, succeeded: bool) -> None:
    """After the password check: a success frees the account's windows, a failure counts against the address."""
    settings = get_settings()
    try:
        limiter = _limiter(queue.limits_storage_uri())
        if succeeded:
            for item in _items(settings.sign_in_account_limits):
                limiter.clear(item, _account_key(email))
        else:
            for item in _items(settings.sign_in_address_limits):
                limiter.hit(item, _address_key(address))
    except (RedisError, StorageError, OSError):
        log.exception("Sign-in throttling is unavailable (Redis unreachable).")
