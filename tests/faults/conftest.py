"""Fixtures of the fault tests that run real worker processes.

Those tests use the end-to-end tests' Redis db (``MARKET_E2E_REDIS_URL``), not the per-session
test db that the in-process fault tests get as ``redis_url``: workers write nonces, locks and
queues there for a minute, and another suite flushing the same db meanwhile would break them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from market.services import ensure_redis
from tests.e2e.conftest import E2E_REDIS_URL


@pytest.fixture
def stack_redis_url() -> Iterator[str]:
    """The end-to-end Redis db, flushed around each test."""
    ensure_redis(E2E_REDIS_URL)
    client: Any = redis.Redis.from_url(E2E_REDIS_URL)
    client.flushdb()
    yield E2E_REDIS_URL
    client.flushdb()
