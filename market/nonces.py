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
transactions sent from the same key by another tool are picked up.

**Redis ahead of the chain.** The record can count transactions that the node does not: for a
moment when the node lags (behind a load balancer, it has not seen our last transaction yet),
for good when they are gone (dropped from the node's pool, or removed by a reorg after they
were mined). The allocator never hands out a nonce above the node's pending count: such a
transaction would wait behind a gap that nobody fills, blocking the account until its receipt
times out, and each such send would write the record anew and so keep it "fresh" for ever
(with a receipt timeout below ``stale_after_s``, the account never recovers). Worse, once
the gap is filled at last, the queued transaction is mined after all, a stale duplicate of a
step that was planned again meanwhile. So a reservation that finds Redis ahead waits, holding
the lock, for the node to catch up; once the record is ``stale_after_s`` old it follows the
chain instead: the node has lost those transactions, and the next sender reuses their nonces.
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
# It is also how long the account waits after the node lost transactions (a drop, a reorg).
DEFAULT_STALE_AFTER_S = 30.0
# How often a reservation that finds Redis ahead asks the node again: a lagging node catches
# up within a block or two; a few cheap calls a second.
AHEAD_POLL_S = 0.25

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

    def reserve(
        self, address: str, waiting: Callable[[], None] | None = None
    ) -> contextlib.AbstractContextManager[NonceSlot]: ...


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
    def reserve(
        self, address: str, waiting: Callable[[], None] | None = None
    ) -> Iterator[NonceSlot]:
        """Hold the account's lock and yield its next nonce; advance it only if sent.

        ``waiting`` is called while the reservation waits for a node behind the record (see
        the module docstring), as the sender calls it while a receipt is pending.
        """
        key = nonce_key(self.chain_id, address)
        # The wait for the account's lock can be long (a holder that was killed keeps it for
        # its lease): ``waiting`` renews the caller's own lease meanwhile, and is called once
        # more with the lock held, so that a caller whose lease was lost while it queued
        # (another worker took its market and may be sending the same step) stops here.
        lease = acquire(
            self.client,
            lock_key(self.chain_id, address),
            lease_s=self.lease_s,
            wait_s=self.wait_s,
            waiting=waiting,
        )
        try:
            if waiting is not None:
                waiting()
            slot = _RedisSlot(self._next(key, address, lease, waiting), lease)
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

    def _next(
        self, key: str, address: str, lease: Lease, waiting: Callable[[], None] | None
    ) -> int:
        record = self.client.hmget(key, ["next", "at"])
        chain = self.pending_count(address)
        if record[0] is None:
            log.info("nonce for %s synced from chain: %d", address, chain)
            return chain
        stored, written_at = int(record[0]), float(record[1] or 0)
        if chain > stored:
            log.warning("nonce for %s behind the chain (%d < %d): resynced", address, stored, chain)
            return chain
        # Redis ahead: wait for a lagging node, never send behind a gap (module docstring).
        while stored > chain and time.time() - written_at <= self.stale_after_s:
            lease.extend()
            if waiting is not None:
                waiting()
            time.sleep(AHEAD_POLL_S)
            chain = self.pending_count(address)
        if stored > chain:
            log.warning(
                "nonce for %s ahead of the chain's pending count (%d > %d) for over %.0f s: "
                "the node lost those transactions (dropped, or a reorg), resynced",
                address,
                stored,
                chain,
                self.stale_after_s,
            )
        return chain


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
    def reserve(
        self, address: str, waiting: Callable[[], None] | None = None
    ) -> Iterator[NonceSlot]:
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
