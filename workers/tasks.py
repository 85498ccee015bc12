"""Thin, idempotent tasks: the logic lives in ``market.orchestrator``, testable without Celery.

``market.orchestrator`` is imported inside the task bodies (and, to save every pool process
the import, once in the worker's main process before it forks), so that the worker starts
(and answers ``ping``) even where the chain side cannot be imported, and so that a broken
orchestrator fails its tasks visibly instead of the worker. It is expected to provide (see
:class:`Orchestrator`):

- ``reconcile() -> Iterable[str]``: the addresses of markets with a due step;
- ``advance(address) -> (done, more)``: do one bounded batch of the market's next step under
  the market lock (``market.locks.market_lock``) and say whether more work is due now. A
  bare ``bool`` (``more``) or an object with a ``more`` attribute is accepted as well.
  It raises ``LockNotAcquired`` when another worker is driving the market, and
  ``LockLost`` when its lease ran out mid-step; both end the task quietly.

Task names are stable (``market.*``): they are what sits in Redis across deployments.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from typing import Any, Protocol, cast

import redis
from celery.signals import worker_init

from market.errors import LockNotAcquired
from market.locks import Lease, LockLost, try_acquire
from workers.celeryconf import app

log = logging.getLogger(__name__)

# Saleor-style bound: an advance re-queues itself while the orchestrator says there is more,
# at most this many times in a row; after that the next reconcile tick takes over. A
# 10,000-sample reveal needs a few dozen batches, so the bound only stops a step that keeps
# saying "more" without progress from spinning faster than the reconcile interval.
MAX_ADVANCE_INVOCATIONS = 100
# One pending advance per market: reconcile runs every few seconds and would otherwise queue
# a copy per tick while a long step runs. The marker expires so that a lost message is
# re-queued; a duplicate is harmless (idempotent steps, market lock), only wasted work.
ADVANCE_QUEUED_PREFIX = "market:advance-queued:"
ADVANCE_QUEUED_TTL_S = 30
# When the last reconcile ran: the beat health check reads it (workers/health.py).
RECONCILE_HEARTBEAT_KEY = "market:reconcile:last"
# One reconcile at a time: beat sends one every interval, and a reconcile over many markets
# can take longer than that. Measured with 20 markets on 20 pool processes: overlapping
# reconciles all re-read every market at once, each took 17 s (up to 60 s) instead of a
# few, and due ends waited for them. A tick that finds one running is skipped.
RECONCILE_RUNNING_KEY = "market:reconcile:running"
# The same for status refreshes: measured with 20 markets, overlapping refreshes (one per
# tick, each re-reading every market) kept eight pool processes busy at once, took a minute
# each, and starved the reconciles and the steps of CPU; due ends then waited 150 s.
REFRESH_RUNNING_KEY = "market:refresh:running"
# Both markers are leases that their holder renews while it runs (see single_flight), so
# these only bound how long a holder killed mid-run blocks the next ticks, not how long a
# run may take. With a fixed 300 s marker, a worker SIGKILLed mid-refresh froze every
# market's status, withdrawals and settlement for five minutes.
RECONCILE_RUNNING_TTL_S = 10
REFRESH_RUNNING_TTL_S = 15
# Diagnostics answer in milliseconds; a minute means the worker is stuck.
DIAGNOSTIC_TIME_LIMIT_S = 60


class Orchestrator(Protocol):
    """What the tasks expect of ``market.orchestrator``."""

    def reconcile(self) -> Iterable[str]:
        """Addresses of the markets that have a step due now."""
        ...

    def advance(self, address: str) -> object:
        """One bounded batch of the market's next step; ``(done, more)``."""
        ...

    def refresh_statuses(self) -> int:
        """Refresh the status cache of every unfinished market."""
        ...


def task(name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register a task on the app under a stable name (Celery is untyped: one place says so)."""
    return cast(Callable[[Callable[..., Any]], Any], app.task(name=name, **options))


def _orchestrator() -> Orchestrator:
    return cast(Orchestrator, importlib.import_module("market.orchestrator"))


def _preload(**_: object) -> None:
    """Import the chain side in the worker's main process, before the pool forks.

    Each pool process then inherits it instead of importing it on its first task: measured
    at 4 s of CPU a process (eth_account's import computes BLS constants), twenty processes
    paid it at once when the first markets came due, on 2 cores, and those ends waited.
    A failure is logged here and shown again by every task that needs the module.
    """
    try:
        _orchestrator()
    except Exception:
        log.exception("market.orchestrator could not be imported: its tasks will fail")


worker_init.connect(_preload, weak=False)


@cache
def _redis() -> redis.Redis:
    # Created lazily in the process that runs tasks (after the prefork fork).
    return redis.Redis.from_url(str(app.conf.broker_url))


def has_more(result: object) -> bool:
    """Whether an ``advance`` result says more work is due: ``(done, more)``, bool or ``.more``."""
    if isinstance(result, tuple) and len(result) == 2:
        return bool(result[1])
    if isinstance(result, bool):
        return result
    return bool(getattr(result, "more", False))


def enqueue_advance(address: str, invocation: int = 1) -> bool:
    """Queue ``advance(address)`` unless one is already pending; whether it was queued."""
    marker = ADVANCE_QUEUED_PREFIX + address.lower()
    if not _redis().set(marker, 1, nx=True, ex=ADVANCE_QUEUED_TTL_S):
        return False
    advance.apply_async(args=(address,), kwargs={"invocation": invocation})
    return True


@contextlib.contextmanager
def single_flight(key: str, ttl_s: int) -> Iterator[bool]:
    """Whether this caller is the only one running the job named by ``key`` (else skip it).

    The marker is a lease of ``ttl_s`` (:mod:`market.locks`): a thread renews it every third
    of that while the job runs, so a long run keeps it, and a holder killed mid-run (no
    ``finally`` runs) blocks the job for ``ttl_s`` at most. Only its holder releases it.
    """
    lease = try_acquire(_redis(), key, lease_s=ttl_s)
    if lease is None:
        yield False
        return
    done = threading.Event()
    renewer = threading.Thread(target=_renew_while_running, args=(lease, done), daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        done.set()
        renewer.join()
        lease.release()


def _renew_while_running(lease: Lease, done: threading.Event) -> None:
    while not done.wait(lease.lease_s / 3):
        try:
            lease.extend()
        except LockLost:
            log.warning("single-flight marker %s was lost (Redis flushed?)", lease.key)
            return
        except redis.RedisError as exc:  # Redis away for a moment: try again next time
            log.warning("could not renew single-flight marker %s: %s", lease.key, exc)


@task("market.reconcile")
def reconcile() -> int:
    """Queue an ``advance`` for every market with a due step; how many were queued."""
    with single_flight(RECONCILE_RUNNING_KEY, RECONCILE_RUNNING_TTL_S) as alone:
        if not alone:
            log.info("a reconcile is already running: this tick is skipped")
            return 0
        queued = sum(enqueue_advance(address) for address in _orchestrator().reconcile())
    _redis().set(RECONCILE_HEARTBEAT_KEY, repr(time.time()))
    return queued


@task("market.refresh_statuses")
def refresh_statuses() -> int:
    """Refresh the status cache the API serves; how many markets were refreshed."""
    with single_flight(REFRESH_RUNNING_KEY, REFRESH_RUNNING_TTL_S) as alone:
        if not alone:
            log.info("a status refresh is already running: this tick is skipped")
            return 0
        return int(_orchestrator().refresh_statuses())


@task("market.advance")
def advance(address: str, invocation: int = 1) -> bool:
    """Drive one market a bounded batch forward; re-queue while there is more to do."""
    # Cleared first: a reconcile during this run may queue the next batch.
    _redis().delete(ADVANCE_QUEUED_PREFIX + address.lower())
    try:
        result = _orchestrator().advance(address)
    except LockNotAcquired:
        log.info("market %s is being driven by another worker", address)
        return False
    except LockLost:
        # The step outlived its lease without renewing it; whoever holds the lock now
        # carries on from the chain, and the next reconcile checks on it.
        log.warning("market %s: lease lost mid-step", address)
        return False
    more = has_more(result)
    if more and invocation < MAX_ADVANCE_INVOCATIONS:
        enqueue_advance(address, invocation + 1)
    elif more:
        log.warning("market %s: %d batches in a row; reconcile continues", address, invocation)
    return more


@task(
    "market.ping",
    bind=True,
    ignore_result=False,
    soft_time_limit=DIAGNOSTIC_TIME_LIMIT_S,
    time_limit=DIAGNOSTIC_TIME_LIMIT_S + 5,
)
def ping(self: Any) -> str:
    """Health check: the name of the worker that answered."""
    return str(self.request.hostname)


@task("market.sleep_then_mark", bind=True)
def sleep_then_mark(self: Any, key: str, seconds: float) -> str:
    """Diagnostic: note the start in list ``key:started``, sleep, then set ``key``.

    Used to check that a task whose worker is killed mid-run is redelivered and finishes
    (acks_late): each delivery appends its worker's name to ``key:started``, and ``key``
    holds the name of the worker that finished.
    """
    worker = str(self.request.hostname)
    _redis().rpush(f"{key}:started", worker)
    time.sleep(seconds)
    _redis().set(key, worker)
    return worker


__all__ = [
    "Orchestrator",
    "advance",
    "enqueue_advance",
    "has_more",
    "ping",
    "reconcile",
    "sleep_then_mark",
]
