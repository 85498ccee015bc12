"""Crashes and outages mid-market: the market still finishes, with the mirror's payouts,
no step done twice, no nonce gap and no reverted or replaced transaction."""

from __future__ import annotations

import random
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from market.tx import read_tx_stats
from market.types import Phase
from tests.e2e.harness import (
    E2E,
    assert_clean_nonces,
    assert_no_step_twice,
    chain_payouts,
    contribute_all,
    hidden_rule,
    launch,
    mirror_payouts,
    running,
    sample,
    wait_for,
    wait_phase,
)
from tests.e2e.proxy import TcpProxy

pytestmark = pytest.mark.e2e

# A small cap makes many steps: with 500 test samples and 120 contributions, the reveal
# takes 2-3 transactions and training several, so a kill lands between two of them. (The
# one-off preparation checks the whole test set's index: at this cap it must stay near 500
# samples.)
GAS_CAP = 2_000_000
TEST_SIZE = 500
CONTRIBUTIONS = 120


def open_market(env: E2E, rng: random.Random, *, contributions: int = CONTRIBUTIONS) -> str:
    """Launch, wait for the public reveal, contribute; the market then ends by itself."""
    rule = hidden_rule(rng)
    address = launch(
        env,
        rule,
        test_size=TEST_SIZE,
        # The public portion is revealed in one transaction: a tenth (50 samples) fits the cap.
        portions=10,
        min_contributions=contributions,
        earliest_end_s=15,
        latest_end_s=120,
    )
    wait_phase(env, address, {Phase.PARTICIPATION}, 40)
    contribute_all(
        env, [(address, sample(rng, rule, flip=i % 4 == 3)) for i in range(contributions)]
    )
    return address


def assert_finished_cleanly(env: E2E, addresses: list[str], timeout_s: float = 90) -> None:
    for address in addresses:
        wait_phase(env, address, {Phase.COLLECT}, timeout_s)
        market = env.client(address)
        wait_for(market.provider_withdrawn, 60, "the provider's withdrawal")
        payouts = chain_payouts(market)
        assert payouts == mirror_payouts(market)
        assert_no_step_twice(market)
    assert_clean_nonces(env.w3, env.operator.address)
    stats = read_tx_stats(env.cache)
    assert stats["reverted"] == 0, stats
    assert stats["replaced"] == 0, stats


@pytest.mark.timeout(150)
def test_worker_sigkilled_mid_reveal_and_mid_training(redis_url: str, tmp_path: Path) -> None:
    rng = random.Random(21)
    with running(redis_url, tmp_path, gas_cap=GAS_CAP) as env:
        address = open_market(env, rng)
        market = env.client(address)
        # when the worker is killed after the first reveal batch, with more to reveal
        wait_for(
            lambda: 0 < market.reveal_status()[0] < market.reveal_status()[1],
            60,
            "a partial reveal",
        )
        assert market.phase() == Phase.REVEAL
        env.stack.restart_worker(env.stack.workers[0])
        # and again after the first training step, with more to train
        wait_for(
            lambda: (
                market.phase() == Phase.REWARD
                and 0 < market.reward_status().trained < market.contribution_stats()[0]
            ),
            90,
            "a partial training pass",
        )
        env.stack.restart_worker(env.stack.workers[0])
        # then the replacement finishes the market as if nothing happened
        assert_finished_cleanly(env, [address])
        assert len(market.revealed_batches()) >= 2
        assert len(market.scored()) >= 3


@pytest.mark.timeout(150)
def test_redis_flushed_mid_market(redis_url: str, tmp_path: Path) -> None:
    rng = random.Random(22)
    with running(redis_url, tmp_path, gas_cap=GAS_CAP) as env:
        address = open_market(env, rng)
        market = env.client(address)
        wait_for(lambda: market.reveal_status()[0] > 0, 60, "the first reveal batch")
        # when Redis loses everything: broker queues, locks, nonces, registry, status cache
        env.cache.flushdb()
        # then the registry and the work are rebuilt from the chain and the vault
        assert_finished_cleanly(env, [address])
        assert address.lower() in env.orchestrator.registry.markets()


@pytest.mark.timeout(150)
def test_rpc_outage_mid_market(redis_url: str, tmp_path: Path) -> None:
    rng = random.Random(23)
    proxies: list[TcpProxy] = []

    def through_proxy(url: str) -> str:
        port = urlsplit(url).port
        assert port is not None
        proxies.append(TcpProxy("127.0.0.1", port).start())
        return proxies[0].url

    with running(redis_url, tmp_path, gas_cap=GAS_CAP, worker_rpc_url=through_proxy) as env:
        [proxy] = proxies
        try:
            address = open_market(env, rng)
            market = env.client(address)
            wait_for(lambda: market.reveal_status()[0] > 0, 60, "the first reveal batch")
            # when the node is unreachable for the workers for 10 s mid-market
            proxy.stop()
            time.sleep(2)  # a transaction sent just before the cut may still land
            stalled = (market.phase(), market.reveal_status()[0], market.reward_status())
            assert stalled[0] != Phase.COLLECT
            time.sleep(10)
            # nothing moved meanwhile (the test itself talks to anvil directly)
            assert (market.phase(), market.reveal_status()[0], market.reward_status()) == stalled
            proxy.start()
            # then the workers' steps are retried and the market finishes
            assert_finished_cleanly(env, [address])
        finally:
            proxy.stop()


@pytest.mark.timeout(150)
def test_two_workers_drive_several_markets(redis_url: str, tmp_path: Path) -> None:
    rng = random.Random(24)
    with running(redis_url, tmp_path, gas_cap=GAS_CAP, workers=2) as env:
        rule = hidden_rule(rng)
        addresses = [
            launch(
                env,
                rule,
                test_size=300,
                min_contributions=12,
                earliest_end_s=20,
                latest_end_s=120,
            )
            for _ in range(4)
        ]
        for address in addresses:
            wait_phase(env, address, {Phase.PARTICIPATION}, 40)
        contribute_all(
            env, [(a, sample(rng, rule, flip=i % 5 == 4)) for a in addresses for i in range(12)]
        )
        assert_finished_cleanly(env, addresses)
        # both processes did some of the work
        for worker in env.stack.workers:
            assert "market.advance" in worker.log_path.read_text()
