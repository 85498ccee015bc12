"""Shared fixtures: a session-scoped anvil, funded accounts, an isolated Redis."""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market.services import ANVIL_MNEMONIC, Anvil, ensure_redis, start_anvil

Account.enable_unaudited_hdwallet_features()

N_ACCOUNTS = 20
# Tests use their own Redis database, flushed around each test, never the service's db 0.
# Each test session claims a free database among 8..15 (a claim key in db 0 with a lease), so
# that two sessions on one machine do not flush each other's keys.
TEST_REDIS_DBS = range(8, 16)
CLAIM_PREFIX = "market:test-db-claim:"
CLAIM_LEASE_S = 3600


def _claim_test_db() -> str:
    explicit = os.environ.get("MARKET_TEST_REDIS_URL")
    if explicit:
        return explicit
    ensure_redis("redis://127.0.0.1:6379/0")
    admin: Any = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    for db in TEST_REDIS_DBS:
        if admin.set(f"{CLAIM_PREFIX}{db}", os.getpid(), nx=True, ex=CLAIM_LEASE_S):
            atexit.register(admin.delete, f"{CLAIM_PREFIX}{db}")
            return f"redis://127.0.0.1:6379/{db}"
    return "redis://127.0.0.1:6379/13"


TEST_REDIS_URL = _claim_test_db()
os.environ["MARKET_TEST_REDIS_URL"] = TEST_REDIS_URL  # subprocesses of this session share it


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    node = start_anvil(accounts=N_ACCOUNTS)
    yield node
    node.stop()


@pytest.fixture(scope="session")
def w3(anvil: Anvil) -> Web3:
    web3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 60}))
    assert web3.is_connected()
    return web3


@pytest.fixture(scope="session")
def accounts() -> list[LocalAccount]:
    """anvil's funded development accounts, with their private keys."""
    return [
        Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        for i in range(N_ACCOUNTS)
    ]


@pytest.fixture
def snapshot(w3: Web3) -> Iterator[None]:
    """Revert the chain to where it was when the test started."""
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    yield
    w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]


@pytest.fixture
def redis_url() -> Iterator[str]:
    ensure_redis(TEST_REDIS_URL)
    client: Any = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
