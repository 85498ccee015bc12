"""A market driven from launch to COLLECT by real workers and beat alone."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from market import status as status_cache
from market.tx import read_tx_stats
from market.types import Phase
from tests.e2e.harness import (
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

pytestmark = pytest.mark.e2e

CONTRIBUTIONS = 24


@pytest.mark.timeout(120)
def test_workers_alone_drive_a_market_to_collect(redis_url: str, tmp_path: Path) -> None:
    rng = random.Random(11)
    rule = hidden_rule(rng)
    with running(redis_url, tmp_path) as env:
        # given a market launched with deadlines of seconds
        address = launch(
            env, rule, min_contributions=CONTRIBUTIONS, earliest_end_s=15, latest_end_s=90
        )
        market = env.client(address)
        # the workers draw and reveal the public portion by themselves
        wait_phase(env, address, {Phase.PARTICIPATION}, 30)
        assert market.public_portion() is not None
        # when participants contribute (a quarter of them flipping labels)
        orders = [(address, sample(rng, rule, flip=i % 4 == 3)) for i in range(CONTRIBUTIONS)]
        contribute_all(env, orders)
        # and nobody but the stack sends anything: end, reveal, rewards, withdrawal
        wait_phase(env, address, {Phase.COLLECT}, 90)
        wait_for(market.provider_withdrawn, 20, "the provider's withdrawal")
        # then the payouts are the mirror's on the revealed test set, in reveal order
        payouts = chain_payouts(market)
        assert len(payouts) == CONTRIBUTIONS
        assert payouts == mirror_payouts(market)
        assert sum(payouts) > 0
        # the market ended early (earliestEnd with enough contributions), by the workers
        info = market.info()
        assert 0 < info.ended_at < market.params().latest_end
        assert_no_step_twice(market)
        assert_clean_nonces(env.w3, env.operator.address)
        stats = read_tx_stats(env.cache)
        assert stats["reverted"] == 0 and stats["replaced"] == 0
        # the status cache the API serves says final, with the steps that were taken
        cached = wait_for(
            lambda: (s := status_cache.read_status(env.cache, address)) and s["final"] and s,
            10,
            "a final status in the cache",
        )
        assert cached["phase"] == "COLLECT"
        steps = {t["step"] for t in cached["transactions"]}
        assert {"reveal_public", "end", "reveal", "prepare", "train"} <= steps
