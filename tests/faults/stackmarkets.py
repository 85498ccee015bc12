"""Markets driven by real worker processes, sized for fault tests that must stay short.

Builds on :mod:`tests.e2e.harness` (a chain with one-second blocks, the real stack): a small
market opened by the provider and its participants, and the checks that a market finished
the way it would have without the fault.
"""

from __future__ import annotations

import random

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
    sample,
    wait_for,
    wait_phase,
)

# Small enough that a market takes a few dozen seconds, large enough for a few batches under
# the cap: 100 test samples (20 public), 16 contributions, a quarter of them adversarial.
TEST_SIZE = 100
CONTRIBUTIONS = 16
GAS_CAP = 2_000_000


def open_market(
    env: E2E,
    rng: random.Random,
    *,
    contributions: int = CONTRIBUTIONS,
    test_size: int = TEST_SIZE,
    portions: int = 5,
    participation_timeout_s: float = 60,
) -> str:
    """Launch, wait until the workers opened it, contribute; it then ends by itself."""
    rule = hidden_rule(rng)
    address = launch(
        env,
        rule,
        test_size=test_size,
        portions=portions,
        min_contributions=contributions,
        earliest_end_s=10,
        latest_end_s=120,
    )
    wait_phase(env, address, {Phase.PARTICIPATION}, participation_timeout_s)
    contribute_all(
        env, [(address, sample(rng, rule, flip=i % 4 == 3)) for i in range(contributions)]
    )
    return address


def assert_finished_like_the_mirror(env: E2E, address: str, timeout_s: float = 90) -> None:
    """COLLECT with the provider paid out, the mirror's payouts, each step done once."""
    wait_phase(env, address, {Phase.COLLECT}, timeout_s)
    market = env.client(address)
    wait_for(market.provider_withdrawn, 60, "the provider's withdrawal")
    assert chain_payouts(market) == mirror_payouts(market)
    assert_no_step_twice(market)


def assert_no_conflicting_transactions(env: E2E) -> dict[str, int]:
    """Consecutive nonces, none stuck or reverted on chain, none reverted in the counters."""
    assert_clean_nonces(env.w3, env.operator.address)
    stats = read_tx_stats(env.cache)
    assert stats["reverted"] == 0, stats
    return stats
