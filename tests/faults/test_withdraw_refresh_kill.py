"""The worker SIGKILLed again and again in the middle of the withdrawal refresh.

Finished markets are watched at a slower pace until everything in them is withdrawn
(``Orchestrator._refresh_withdrawals``, run by the ``market.refresh_statuses`` task): each
round claims a per-market throttle key, re-reads the market into the status cache, and marks
it settled once the provider and every contribution are withdrawn. A worker killed in the
middle leaves a throttle key without the refresh it stood for, and a contributors entry
written by the previous run. Whatever the kills interrupt, the cache must end up showing
every withdrawal the chain has, and every market settled in the registry.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from market import status as status_cache
from market.orchestrator import WITHDRAWALS_REFRESHED_PREFIX
from market.stack import Proc
from market.types import Phase
from tests.e2e.harness import (
    E2E,
    contribute_all,
    hidden_rule,
    launch,
    running,
    sample,
    wait_for,
    wait_phase,
)

pytestmark = pytest.mark.e2e

MARKETS = 3
CONTRIBUTIONS = 5
KILLS = 3


def withdraw(env: E2E, claims: list[tuple[str, str, list[int]]]) -> None:
    """Each ``(market, account, ids)`` withdraws its ids; all sent at once, then awaited."""
    by_address = {a.address.lower(): a for a in env.accounts}
    w3 = env.w3
    nonces: dict[str, int] = {}
    fee = 2 * int(w3.eth.get_block("latest").get("baseFeePerGas", 0)) + 10**9
    hashes = []
    for address, account_address, ids in claims:
        account = by_address[account_address]
        nonce = nonces.setdefault(
            account.address, int(w3.eth.get_transaction_count(account.address, "pending"))
        )
        nonces[account.address] = nonce + 1
        tx: Any = (
            env.client(address)
            .withdraw(ids)
            .build_transaction(
                {  # type: ignore[arg-type]
                    "from": account.address,
                    "gas": 300_000,
                    "nonce": nonce,
                    "maxFeePerGas": fee,
                    "maxPriorityFeePerGas": 10**9,
                    "chainId": w3.eth.chain_id,
                }
            )
        )
        hashes.append(w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
    receipts = [w3.eth.wait_for_transaction_receipt(h, timeout=60) for h in hashes]
    assert all(r["status"] == 1 for r in receipts), "a withdrawal reverted"


def claims_of(env: E2E, addresses: list[str]) -> list[tuple[str, str, list[int]]]:
    """Every contributor's ids, per market."""
    out = []
    for address in addresses:
        ids: dict[str, list[int]] = defaultdict(list)
        for record in env.client(address).contributions():
            ids[record.contributor.lower()].append(record.id)
        out += [(address, account, sorted(i)) for account, i in sorted(ids.items())]
    return out


def kill_mid_refresh(env: E2E) -> Proc:
    """Let a refresh of finished markets start, SIGKILL the worker during it, start another."""

    def keys() -> list[Any]:
        return list(env.cache.keys(WITHDRAWALS_REFRESHED_PREFIX + "*"))

    # The throttle keys are what a refresh claims first: without them, the next refresh
    # re-reads every finished market (they would expire after 15 s by themselves).
    for key in keys():
        env.cache.delete(key)
    # Polled tightly: the kill must land within the refresh, which takes a second or less.
    deadline = time.monotonic() + 30
    while not keys():
        assert time.monotonic() < deadline, "no withdrawal refresh started in 30 s"
        time.sleep(0.01)
    [worker] = env.stack.workers
    env.stack.kill_worker(worker)
    env.stack.start_worker()
    return worker


def cache_shows_all_withdrawn(env: E2E, address: str) -> bool:
    contributors = status_cache.read_contributors(env.cache, address)
    accounts = contributors.get("accounts", {})
    return len(accounts) > 0 and all(all(a["withdrawn"]) for a in accounts.values())


@pytest.mark.timeout(180)
def test_withdrawal_refresh_survives_repeated_kills(stack_redis_url: str, tmp_path: Path) -> None:
    rng = random.Random(71)
    rule = hidden_rule(rng)
    with running(stack_redis_url, tmp_path) as env:
        # given finished markets, each with its own contributors
        addresses = [
            launch(
                env,
                rule,
                test_size=40,
                portions=4,
                min_contributions=CONTRIBUTIONS,
                earliest_end_s=10,
                latest_end_s=120,
            )
            for _ in range(MARKETS)
        ]
        for address in addresses:
            wait_phase(env, address, {Phase.PARTICIPATION}, 60)
        contribute_all(
            env,
            [
                (a, sample(rng, rule, flip=i % 4 == 3))
                for a in addresses
                for i in range(CONTRIBUTIONS)
            ],
        )
        registry = env.orchestrator.registry
        lowered = {a.lower() for a in addresses}
        wait_for(lambda: lowered <= registry.finished(), 120, "every market finished")
        assert not lowered & registry.settled()
        # when the contributors withdraw in rounds, and a worker is killed mid-refresh after each
        claims = claims_of(env, addresses)
        killed = []
        for k in range(KILLS):
            withdraw(env, claims[k::KILLS])
            killed.append(kill_mid_refresh(env))
        # then each kill landed while a status refresh was running
        for worker in killed:
            log = worker.log_path.read_text()
            started = log.rfind("Task market.refresh_statuses[")
            assert started >= 0, worker.log_tail()
            task_id = log[started:].split("[", 1)[1].split("]", 1)[0]
            assert f"market.refresh_statuses[{task_id}] succeeded" not in log, task_id
        # and the cache ends up with every withdrawal, and every market settled
        began = time.monotonic()
        wait_for(lambda: lowered <= registry.settled(), 90, "every market settled")
        for address in addresses:
            assert cache_shows_all_withdrawn(env, address), address
            market = env.client(address)
            assert market.provider_withdrawn()
            accounts = status_cache.read_contributors(env.cache, address)["accounts"]
            for entry in accounts.values():
                assert all(market.withdrawn(i) for i in entry["ids"])
                assert entry["payouts"] == [str(market.payout_of(i)) for i in entry["ids"]]
        # within a few throttle periods of the last kill
        assert time.monotonic() - began < 90
