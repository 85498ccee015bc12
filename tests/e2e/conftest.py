"""End-to-end fixtures: every test here runs real worker processes and a chain of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from market.services import ensure_redis

E2E_REDIS_URL = os.environ.get("MARKET_E2E_REDIS_URL", "redis://127.0.0.1:6379/11")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis db of the end-to-end tests' own, flushed around each test.

    Not the shared test db: these tests run for a minute with workers writing nonces and
    locks, and another suite flushing or writing the same db meanwhile (the operator key
    and chain id are the same on every anvil) would break them for no fault of theirs.
    """
    ensure_redis(E2E_REDIS_URL)
    client: Any = redis.Redis.from_url(E2E_REDIS_URL)
    client.flushdb()
    yield E2E_REDIS_URL
    client.flushdb()
