"""Nonce assignment for sending accounts: one place, shared by every worker process.

Each sending account has one nonce stream per chain. The next nonce lives in Redis under
``market:nonce:{chain_id}:{address}`` and is handed out under a Redis lock with a lease
(:mod:`market.locks`), so two processes never get the same one:

    with allocator.reserve(address) as slot:
        raw = sign(tx, nonce=slot.nonce)
        send(raw)               # may be retried; calls slot.keep_alive() between attempts
        slot.mark_sent()        # the node accepted it: the counter moves to nonce + 1

**Why the lock is held from reservation to send, and nothing is ever "released".** The
alternative, a short lock around the counter and a free list of nonces that were reserved
but not sent, leaks a nonce whenever the reserving process dies between the two steps (a
SIGKILLed worker cannot return it), and every later transaction of the account then waits
behind the gap forever. Here the counter only moves once the node has accepted the
transaction, so a reservation that ends without ``mark_sent`` (an exception, a kill, a lost
lease) leaves the counter where it was and the next caller gets the same nonce: no gap by
construction. The price is that sends from one account are serialized for one RPC round
trip each, which is what DESIGN asks ("one nonce stream per account") and far below the rate
at which a market produces transactions. Waiting for receipts happens outside the lock.

**Resynchronization with the chain.** Every reservation also reads the chain's ``pending``
transaction count and takes the larger of the two, so a flushed Redis, a first use, or
transactions sent from the same key by another tool are picked up. Redis may be *ahead* of
the chain's pending count for a moment (a node behind a load balancer that has not seen our
last transaction yet); after ``stale_after_s`` without a write it is trusted no more, because
then the node has dropped those transactions and the gap would block the account.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import redis

from market.locks import Lease, acquire

log = logging.getLogger(__name__)

KEY_PREFIX = "market:nonce:"
LOCK_PREFIX = "market:nonce-lock:"
# A reservation covers signing and one send, retried through an RPC outage; the holder
# renews the lease between attempts, so the lease only needs to outlive one attempt. If the
# holder dies, the next sender waits at most this long.
DEFAULT_NONCE_LEASE_S = 30.0
# How long a waiting sender queues for the account's lock: every holder is one send away
# from releasing it, so a long wait means something is wrong and the caller should retry.
DEFAULT_WAIT_S = 60.0
# How long Redis may stay ahead of the node's pending count before it is considered stale:
# longer than a load-balanced RPC's propagation lag (seconds), shorter than a receipt timeout.
DEFAULT_STALE_AFTER_S = 30.0

# Move the account's counter up to ARGV[1] (never down) and stamp when it was written.
_ADVANCE = """
local current = tonumber(redis.call('hget', KEYS[1], 'next') or '-1')
if tonumber(ARGV[1]) > current then
    redis.call('hset', KEYS[1], 'next', ARGV[1], 'at', ARGV[2])
    return 1
end
return 0
"""

PendingCount = Callable[[str], int]
"""Reads ``eth_getTransactionCount(address, "pending")`` from the chain."""


class NonceSlot(Protocol):
    """A reserved nonce: send with it, then ``mark_sent``; renew with ``keep_alive``."""

    nonce: int

    def keep_alive(self) -> None: ...

    def mark_sent(self) -> None: ...


class NonceSource(Protocol):
    """Anything that hands out reserved nonces for an address."""

    def reserve(self, address: str) -> contextlib.AbstractContextManager[NonceSlot]: ...


def nonce_key(chain_id: int, address: str) -> str:
    """The Redis key holding the account's next nonce on the chain."""
    return f"{KEY_PREFIX}{chain_id}:{address.lower()}"


def lock_key(chain_id: int, address: str) -> str:
    """The Redis key of the lock that serializes the account's sends."""
    return f"{LOCK_PREFIX}{chain_id}:{address.lower()}"


class _RedisSlot:
    """A nonce reserved under the account's Redis lease."""

    def __init__(self, nonce: int, lease: Lease) -> None:
        self.nonce = nonce
        self.sent = False
        self._lease = lease

    def keep_alive(self) -> None:
        """Renew the lease; :class:`market.locks.LockLost` when another sender took over."""
        self._lease.extend()

    def mark_sent(self) -> None:
        """Record that the node accepted a transaction with this nonce."""
        self.sent = True


class NonceAllocator:
    """Redis-backed nonce allocator for one chain, serialized per account by a lease."""

    def __init__(
        self,
        client: redis.Redis,
        chain_id: int,
        pending_count: PendingCount,
        *,
        lease_s: float = DEFAULT_NONCE_LEASE_S,
        wait_s: float = DEFAULT_WAIT_S,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self.client = client
        self.chain_id = chain_id
        self.pending_count = pending_count
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.stale_after_s = stale_after_s
        self._advance: Callable[..., Any] = client.register_script(_ADVANCE)

    @contextlib.contextmanager
    def reserve(self, address: str) -> Iterator[NonceSlot]:
        """Hold the account's lock and yield its next nonce; advance it only if sent."""
        key = nonce_key(self.chain_id, address)
        lease = acquire(
            self.client, lock_key(self.chain_id, address), lease_s=self.lease_s, wait_s=self.wait_s
        )
        try:
            slot = _RedisSlot(self._next(key, address), lease)
            yield slot
            if slot.sent:
                # Raise, never lower: if our lease ran out mid-send and another sender moved
                # the counter past us, writing nonce + 1 blindly would hand out its nonces again.
                self._advance(keys=[key], args=[slot.nonce + 1, f"{time.time():.3f}"])
        finally:
            lease.release()

    def peek(self, address: str) -> int | None:
        """The next nonce Redis holds for the account, or None (for checks and tests)."""
        raw = self.client.hget(nonce_key(self.chain_id, address), "next")
        return None if raw is None else int(raw)

    def _next(self, key: str, address: str) -> int:
        record = self.client.hmget(key, ["next", "at"])
        chain = self.pending_count(address)
        if record[0] is None:
            log.info("nonce for %s synced from chain: %d", address, chain)
            return chain
        stored, written_at = int(record[0]), float(record[1] or 0)
        if chain > stored:
            log.warning("nonce for %s behind the chain (%d < %d): resynced", address, stored, chain)
            return chain
        if stored > chain and time.time() - written_at > self.stale_after_s:
            log.warning(
                "nonce for %s ahead of the chain's pending count (%d > %d) for over %.0f s: "
                "the node dropped those transactions, resynced",
                address,
                stored,
                chain,
                self.stale_after_s,
            )
            return chain
        return stored


class _LocalSlot:
    def __init__(self, nonce: int) -> None:
        self.nonce = nonce
        self.sent = False

    def keep_alive(self) -> None:
        """Nothing to renew: the lock is a thread lock."""

    def mark_sent(self) -> None:
        self.sent = True


class LocalNonces:
    """In-process nonce source for one-off tools (a participant's CLI), no Redis needed.

    Same rules as :class:`NonceAllocator` but the lock only covers this process: the service's
    workers must share a :class:`NonceAllocator`.
    """

    def __init__(self, pending_count: PendingCount) -> None:
        self.pending_count = pending_count
        self._lock = threading.Lock()
        self._next: dict[str, int] = {}

    @contextlib.contextmanager
    def reserve(self, address: str) -> Iterator[NonceSlot]:
        """Yield the account's next nonce under a thread lock; advance it only if sent."""
        with self._lock:
            slot = _LocalSlot(max(self.pending_count(address), self._next.get(address.lower(), 0)))
            yield slot
            if slot.sent:
                self._next[address.lower()] = slot.nonce + 1


__all__ = [
    "DEFAULT_NONCE_LEASE_S",
    "LocalNonces",
    "NonceAllocator",
    "NonceSlot",
    "NonceSource",
    "lock_key",
    "nonce_key",
]
