"""The per-market lock on a real Redis, with real competing and killed processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import redis

from market.errors import LockNotAcquired
from market.locks import LockLost, acquire, lock_key, market_lock, try_acquire

MARKET = "0x00000000000000000000000000000000000000AA"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection: redis.Redis = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def python(code: str, redis_url: str) -> subprocess.Popen[str]:
    """A separate Python process running ``code`` with ``client`` connected to the test db."""
    prelude = (
        "import sys, time, redis\n"
        "from market.locks import market_lock, acquire, lock_key\n"
        f"client = redis.Redis.from_url({redis_url!r})\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(60)
def test_processes_never_hold_the_lock_together(redis_url: str, client: redis.Redis) -> None:
    # given four processes that each do a read-sleep-write increment 25 times under the lock:
    # without mutual exclusion, overlapping increments are lost
    rounds, workers = 25, 4
    code = f"""
        for _ in range({rounds}):
            with market_lock(client, {MARKET!r}, lease_s=10, wait_s=30):
                inside = client.incr("inside")
                value = int(client.get("counter") or 0)
                time.sleep(0.002)
                client.set("counter", value + 1)
                client.rpush("overlaps", inside)
                client.decr("inside")
    """
    # when they run at once
    procs = [python(code, redis_url) for _ in range(workers)]
    for proc in procs:
        _, err = proc.communicate(timeout=50)
        assert proc.returncode == 0, err
    # then no increment was lost and nobody was ever inside with someone else
    assert int(client.get("counter") or 0) == rounds * workers
    assert {int(v) for v in client.lrange("overlaps", 0, -1)} == {1}
    assert not client.exists(lock_key(MARKET))


@pytest.mark.timeout(60)
def test_lease_of_a_sigkilled_holder_expires(redis_url: str, client: redis.Redis) -> None:
    # given a process that took the lock with a 1.5 s lease and hangs
    holder = python(
        f"""
        lease = acquire(client, lock_key({MARKET!r}), lease_s=1.5)
        print("held", flush=True)
        time.sleep(600)
        """,
        redis_url,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    # when it is SIGKILLed: nothing gets to release the lock
    holder.kill()
    holder.wait()
    killed_at = time.monotonic()
    # then the market stays locked until the lease runs out, and not longer
    with pytest.raises(LockNotAcquired) as refused:
        acquire(client, lock_key(MARKET), lease_s=5)
    assert refused.value.key == lock_key(MARKET)
    lease = acquire(client, lock_key(MARKET), lease_s=5, wait_s=5)
    waited = time.monotonic() - killed_at
    assert lease.held()
    assert 0.5 < waited < 2.5
    assert holder.stdout.read() == ""
    holder.stdout.close()
    assert holder.stderr is not None
    holder.stderr.close()


def test_release_after_expiry_leaves_the_new_holders_lock(client: redis.Redis) -> None:
    key = lock_key(MARKET)
    # given a holder whose lease expired and a second actor who took the lock after it
    stale = acquire(client, key, lease_s=0.1)
    time.sleep(0.2)
    current = acquire(client, key, lease_s=10)
    # when the stale holder releases and tries to extend
    released = stale.release()
    with pytest.raises(LockLost):
        stale.extend()
    # then neither touched the lock of the current holder
    assert released is False
    assert current.held()
    assert client.get(key) == current.token.encode()
    assert current.release() is True
    assert not client.exists(key)


def test_extend_renews_the_lease(client: redis.Redis) -> None:
    key = lock_key(MARKET)
    # given a lease of 0.5 s
    lease = acquire(client, key, lease_s=0.5)
    assert lease.remaining_s() <= 0.5
    # when a long step renews it to 3 s and keeps working past the first lease
    lease.extend(3)
    time.sleep(0.7)
    # then it is still held, with the renewed time left
    assert lease.held()
    assert 2.0 < lease.remaining_s() <= 2.4
    assert try_acquire(client, key) is None
    # and after it is released, extend reports the loss instead of re-taking the lock
    lease.release()
    with pytest.raises(LockLost):
        lease.extend()
    assert not client.exists(key)


def test_context_manager_refuses_a_held_lock_and_releases_its_own(
    client: redis.Redis,
) -> None:
    # given the market locked by someone else
    other = acquire(client, lock_key(MARKET), lease_s=10)
    # then the context manager raises the typed error, and waiting is bounded
    start = time.monotonic()
    with pytest.raises(LockNotAcquired) as refused, market_lock(client, MARKET, wait_s=0.3):
        pass
    assert 0.3 <= time.monotonic() - start < 1.0
    assert refused.value.waited_s >= 0.3
    # the error survives pickling (Celery ships exceptions between processes)
    assert pickle.loads(pickle.dumps(refused.value)).key == lock_key(MARKET)
    other.release()
    # when the block raises, the lock is still released; addresses compare case-insensitively
    with pytest.raises(ZeroDivisionError), market_lock(client, MARKET.lower()) as lease:
        assert client.exists(lock_key(MARKET))
        raise ZeroDivisionError
    assert lease.released
    assert not client.exists(lock_key(MARKET))


def test_lease_must_be_positive(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="lease_s"):
        acquire(client, lock_key(MARKET), lease_s=0)


def test_a_waiting_acquirer_renews_its_other_lease_and_stops_when_it_is_lost(
    client: redis.Redis,
) -> None:
    # given an account lock held by a worker that was killed (it stays until its lease ends)
    held = try_acquire(client, "market:nonce-lock:test", lease_s=30)
    assert held is not None
    # and a market lease of ours that is shorter than the wait
    ours = try_acquire(client, lock_key("0xmarket"), lease_s=1)
    assert ours is not None
    # when we queue for the account lock, our market lease is renewed while we wait
    with pytest.raises(LockNotAcquired):
        acquire(client, "market:nonce-lock:test", wait_s=2.5, waiting=ours.extend)
    assert ours.held()
    # and when another worker takes the market meanwhile, the wait ends with LockLost
    client.set(lock_key("0xmarket"), "someone else")
    with pytest.raises(LockLost):
        acquire(client, "market:nonce-lock:test", wait_s=5, waiting=ours.extend)
    held.release()
