"""Real Celery worker processes on the test Redis: ping, and tasks that survive a killed worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from market.stack import Stack, local_stack

pytestmark = pytest.mark.e2e

# Short enough to see a killed worker's task come back within seconds; longer than the
# diagnostic task below, which must not be redelivered while a live worker still runs it.
VISIBILITY_S = 4
TASK_S = 2.0


# Long enough that a task coming back sooner cannot have come through the visibility timeout.
LONG_VISIBILITY_S = 120


def worker_stack(redis_url: str, tmp_path: Path, visibility_s: float) -> Iterator[Stack]:
    with local_stack(
        redis_url=redis_url,
        chain=False,
        beat=False,
        env={"MARKET_VISIBILITY_TIMEOUT_S": str(visibility_s)},
        log_dir=tmp_path / "log",
        run_dir=tmp_path / "run",
    ) as running:
        yield running


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    yield from worker_stack(redis_url, tmp_path, VISIBILITY_S)


@pytest.fixture
def slow_redelivery_stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    yield from worker_stack(redis_url, tmp_path, LONG_VISIBILITY_S)


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
    return value


def started(client: redis.Redis, key: str) -> list[str]:
    return [value.decode() for value in client.lrange(f"{key}:started", 0, -1)]


@pytest.mark.timeout(90)
def test_a_real_worker_answers_ping(stack: Stack) -> None:
    # given a stack with one worker process on the test Redis
    [worker] = stack.workers
    assert worker.alive()
    # when the ping task is sent through Redis
    answered_by = stack.ping(timeout_s=20)
    # then that worker ran it, and its log shows the task
    assert answered_by == worker.nodename
    assert "market.ping" in worker.log_path.read_text()


@pytest.mark.timeout(120)
def test_task_of_a_sigkilled_worker_is_redelivered_and_finishes(
    stack: Stack, redis_url: str
) -> None:
    client: redis.Redis = redis.Redis.from_url(redis_url)
    key = "diag:killed-mid-task"
    [first] = stack.workers
    # given a long task running on the first worker
    stack.app.send_task("market.sleep_then_mark", args=(key, TASK_S))
    wait_for(lambda: started(client, key), 20, "the task to start")
    # when the worker is SIGKILLed (with its pool) in the middle of it
    killed_at = time.monotonic()
    stack.kill_worker(first)
    assert client.get(key) is None
    second = stack.start_worker()
    # then the task is redelivered to the new worker once the visibility timeout passes
    finished_by = wait_for(lambda: client.get(key), 30, "the redelivered task to finish")
    elapsed = time.monotonic() - killed_at
    assert finished_by.decode() == second.nodename
    assert started(client, key) == [first.nodename, second.nodename]
    assert elapsed >= TASK_S
    # and it is not delivered again: the live worker acknowledged it
    time.sleep(VISIBILITY_S + 1.5)
    assert started(client, key) == [first.nodename, second.nodename]
    print(f"redelivered and finished {elapsed:.1f} s after the kill")


@pytest.mark.timeout(90)
def test_task_of_a_killed_pool_process_is_requeued_at_once(
    slow_redelivery_stack: Stack, redis_url: str
) -> None:
    stack = slow_redelivery_stack
    client: redis.Redis = redis.Redis.from_url(redis_url)
    key = "diag:child-killed"
    [worker] = stack.workers
    [child] = worker.children()
    # given a long task running in the worker's pool process
    stack.app.send_task("market.sleep_then_mark", args=(key, TASK_S))
    wait_for(lambda: started(client, key), 20, "the task to start")
    # when only that pool process dies (SIGKILL, as the OOM killer would)
    killed_at = time.monotonic()
    os.kill(child, signal.SIGKILL)
    # then the worker requeues it (task_reject_on_worker_lost) and a new pool process runs it,
    # long before the visibility timeout would have brought it back
    wait_for(lambda: client.get(key), 40, "the requeued task to finish")
    elapsed = time.monotonic() - killed_at
    assert started(client, key) == [worker.nodename, worker.nodename]
    assert worker.alive()
    assert elapsed < LONG_VISIBILITY_S / 2
    print(f"requeued and finished {elapsed:.1f} s after the kill")


@pytest.mark.timeout(90)
def test_beat_enqueues_reconcile_on_its_interval(redis_url: str, tmp_path: Path) -> None:
    # given a stack with beat and a half-second reconcile interval
    with local_stack(
        redis_url=redis_url,
        chain=False,
        beat=True,
        env={"MARKET_RECONCILE_INTERVAL_S": "0.5"},
        log_dir=tmp_path / "log",
        run_dir=tmp_path / "run",
    ) as stack:
        [worker] = stack.workers
        assert stack.beat is not None

        # when a few intervals pass
        def received() -> int:
            return worker.log_path.read_text().count("Task market.reconcile[")

        # then the worker keeps receiving market.reconcile, once per interval
        wait_for(lambda: received() >= 3, 30, "three reconcile tasks from beat")
        assert "Scheduler: Sending due task reconcile (market.reconcile)" in (
            stack.beat.log_path.read_text()
        )
