"""The reconcile health check used by the beat container, against the test Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis

from market.config import Settings
from workers.health import max_reconcile_age_s, reconcile_age_s
from workers.tasks import RECONCILE_HEARTBEAT_KEY


def check(redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MARKET_REDIS_URL": redis_url, "MARKET_RECONCILE_INTERVAL_S": "2"}
    return subprocess.run(
        [sys.executable, "-m", "workers.health", "reconcile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.timeout(60)
def test_health_follows_the_last_reconcile(redis_url: str) -> None:
    client: redis.Redis = redis.Redis.from_url(redis_url)
    # given no reconcile ever ran: unhealthy, and it says why
    never = check(redis_url)
    assert never.returncode == 1
    assert "never" in never.stderr
    # given one ran a second ago: healthy
    client.set(RECONCILE_HEARTBEAT_KEY, repr(time.time() - 1))
    assert check(redis_url).returncode == 0
    age = reconcile_age_s(client)
    assert age is not None and 1 <= age < 10
    # given the last one is older than ten intervals (and 30 s): unhealthy
    client.set(RECONCILE_HEARTBEAT_KEY, repr(time.time() - 31))
    stale = check(redis_url)
    assert stale.returncode == 1
    assert "limit 30 s" in stale.stderr


def test_tolerated_age_is_ten_ticks_and_at_least_30_s() -> None:
    assert max_reconcile_age_s(Settings(reconcile_interval_s=2)) == 30
    assert max_reconcile_age_s(Settings(reconcile_interval_s=10)) == 100
