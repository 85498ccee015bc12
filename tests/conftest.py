"""Shared fixtures: a session-scoped anvil, funded accounts, an isolated Redis."""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator
from pathlib import Path
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
# Each test session claims a free database among 1..8 (a claim key in db 0 with a lease), so
# that two sessions on one machine do not flush each other's keys. The benchmarks (10, 12) and
# the demo (14) keep their own databases outside this range.
TEST_REDIS_DBS = range(1, 9)
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


@pytest.fixture
def make_service(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, tmp_path: Path
) -> Callable[..., Any]:
    """Build the service's orchestrator on the session anvil: a fresh factory deployed by the
    operator (``accounts[operator]``), a vault in ``tmp_path``, the isolated Redis db.
    Keyword arguments override :class:`market.config.Settings` fields."""
    from dataclasses import replace

    from market.config import Settings
    from market.launch import deploy_factory
    from market.orchestrator import Orchestrator
    from market.tx import TxSender
    from market.vault import generate_vault_key

    def build(operator: int = 0, **overrides: Any) -> Orchestrator:
        account = accounts[operator]
        base = Settings(
            rpc_url=w3.provider.endpoint_uri,  # type: ignore[attr-defined]
            redis_url=redis_url,
            vault_dir=tmp_path / "vault",
            vault_key=generate_vault_key(),
            operator_key=account.key.hex(),
        )
        base = replace(base, **overrides)
        cache = redis.Redis.from_url(redis_url)
        factory = deploy_factory(TxSender.from_settings(base, w3, account, cache))
        return Orchestrator(
            replace(base, factory_address=factory), w3=w3, cache=cache, account=account
        )

    return build
