"""Per-market Redis locks with a lease: one actor drives a market at a time.

The lock is a Redis key holding a random token, set with ``SET NX PX``: it expires on its
own, so a holder that was SIGKILLed blocks the market for at most one lease. Extending and
releasing run as Lua scripts that act only when the key still holds the caller's token, so
a holder whose lease ran out can never extend or delete the lock of the actor that took over.

    with market_lock(client, address, lease_s=settings.lock_lease_s) as lease:
        for batch in batches:
            send(batch)
            lease.extend()  # a long step renews its lease between transactions
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from market.config import DEFAULT_LOCK_LEASE_S as DEFAULT_LEASE_S
from market.errors import LockLost, LockNotAcquired

KEY_PREFIX = "market:lock:"
# How long a waiting acquirer sleeps between attempts: short against a lease of minutes,
# long enough not to hammer Redis when several workers wait on one market.
RETRY_INTERVAL_S = 0.05
# How often a waiting acquirer calls its ``waiting`` hook: often against any lease, rarely
# against Redis.
WAITING_CALL_S = 0.5

# Set the key to a new expiry only while it holds our token (else 0: the lease was lost).
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# Delete the key only while it holds our token: never release a lock someone else took.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def lock_key(address: str) -> str:
    """The Redis key that guards one market (addresses compare case-insensitively)."""
    return KEY_PREFIX + address.lower()


def _ms(seconds: float) -> int:
    if seconds <= 0:
        raise ValueError(f"lease_s={seconds} must be positive")
    return max(1, int(seconds * 1000))


class Lease:
    """A held lock: ``extend`` renews it, ``release`` gives it up; both check the token."""

    def __init__(self, client: redis.Redis, key: str, token: str, lease_s: float) -> None:
        self.client = client
        self.key = key
        self.token = token
        self.lease_s = lease_s
        self.released = False
        # EVALSHA with a fallback to EVAL; typed as a plain callable (the stubs leave it bare).
        self._extend: Callable[..., Any] = client.register_script(_EXTEND)
        self._release: Callable[..., Any] = client.register_script(_RELEASE)

    def extend(self, lease_s: float | None = None) -> None:
        """Reset the lease to ``lease_s`` from now; :class:`LockLost` if it is no longer ours."""
        ms = _ms(self.lease_s if lease_s is None else lease_s)
        if self.released or not self._extend(keys=[self.key], args=[self.token, ms]):
            raise LockLost(self.key)

    def release(self) -> bool:
        """Delete the lock if it is still ours; whether it was."""
        if self.released:
            return False
        self.released = True
        return bool(self._release(keys=[self.key], args=[self.token]))

    def held(self) -> bool:
        """Whether the key still holds our token (a read, for checks and tests)."""
        value = self.client.get(self.key)
        return not self.released and value is not None and _text(value) == self.token

    def remaining_s(self) -> float:
        """Seconds left on the lease as Redis sees it (0 when gone)."""
        ms = int(self.client.pttl(self.key))
        return max(ms, 0) / 1000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def try_acquire(client: redis.Redis, key: str, *, lease_s: float = DEFAULT_LEASE_S) -> Lease | None:
    """One ``SET key token NX PX lease`` attempt: the lease, or None when the key is taken."""
    token = secrets.token_hex(16)
    if client.set(key, token, nx=True, px=_ms(lease_s)):
        return Lease(client, key, token, lease_s)
    return None


def acquire(
    client: redis.Redis,
    key: str,
    *,
    lease_s: float = DEFAULT_LEASE_S,
    wait_s: float = 0.0,
    waiting: Callable[[], None] | None = None,
) -> Lease:
    """Take the lock, waiting up to ``wait_s``; :class:`LockNotAcquired` when it stays held.

    ``waiting`` is called between attempts (at most every ``WAITING_CALL_S``): a caller that
    holds another lease renews it there, and learns there (it raises) that it lost it.
    """
    start = time.monotonic()
    called = start
    while True:
        lease = try_acquire(client, key, lease_s=lease_s)
        if lease is not None:
            return lease
        now = time.monotonic()
        waited = now - start
        if waited >= wait_s:
            raise LockNotAcquired(key, waited)
        if waiting is not None and now - called >= WAITING_CALL_S:
            waiting()
            called = now
        time.sleep(min(RETRY_INTERVAL_S, wait_s - waited))


@contextlib.contextmanager
def market_lock(
    client: redis.Redis,
    address: str,
    *,
    lease_s: float = DEFAULT_LEASE_S,
    wait_s: float = 0.0,
) -> Iterator[Lease]:
    """Hold the market's lock for a ``with`` block and release it (if still ours) after."""
    lease = acquire(client, lock_key(address), lease_s=lease_s, wait_s=wait_s)
    try:
        yield lease
    finally:
        lease.release()


__all__ = [
    "DEFAULT_LEASE_S",
    "Lease",
    "LockLost",
    "LockNotAcquired",
    "acquire",
    "lock_key",
    "market_lock",
    "try_acquire",
]
