"""The contract against the Python mirror on many random markets: identical to the wei.

Each example is a whole market on anvil (launch, draw, public reveal, contributions, end,
batched reveal, training, rounds, settlement) compared with ``market.rewards`` on the same
inputs: the ``A_i``, every round's ``(T, R, removed)``, every payout and the provider's
remainder must be identical, and conservation must hold exactly.
"""

from __future__ import annotations

import random

from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from web3 import Web3

from market.chain import FactoryClient
from tests.contracts.scenario import random_spec, run_market

SNAPSHOT = "evm_snapshot"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(
    seed=st.integers(0, 2**32),
    contributions=st.integers(0, 30),
    flippers=st.sampled_from((0.0, 0.3, 0.6, 1.0)),
    n=st.integers(2, 40),
    gas_cap=st.sampled_from((15_000_000, 2_000_000)),
)
@example(seed=1, contributions=0, flippers=0.3, n=10, gas_cap=15_000_000)  # nobody came
@example(seed=2, contributions=12, flippers=1.0, n=20, gas_cap=15_000_000)  # all bad
@example(seed=3, contributions=12, flippers=0.0, n=20, gas_cap=15_000_000)  # all good
@example(seed=4, contributions=8, flippers=0.3, n=2, gas_cap=15_000_000)  # m = 1
@example(seed=5, contributions=25, flippers=0.6, n=40, gas_cap=2_000_000)  # many small steps
def test_contract_equals_mirror(
    w3: Web3,
    factory: FactoryClient,
    accounts: list[LocalAccount],
    seed: int,
    contributions: int,
    flippers: float,
    n: int,
    gas_cap: int,
) -> None:
    rng = random.Random(seed)
    spec = random_spec(rng, contributions=contributions, flippers=flippers, n=n)
    snap = w3.provider.make_request(SNAPSHOT, [])["result"]  # type: ignore[arg-type]
    try:
        run = run_market(w3, factory, accounts, spec, gas_cap=gas_cap)
        count, deposits = run.client.contribution_stats()
        assert count == contributions
        if run.mirror is None:
            assert run.remainder == spec.bounty
            return
        mirror = run.mirror
        assert run.scored == list(mirror.accuracies)
        assert run.client.rounds() == [
            (r.total, r.remaining, len(r.removed)) for r in mirror.rounds
        ]
        assert run.payouts == list(mirror.payouts)
        assert run.remainder == mirror.provider_remainder
        assert spec.bounty + deposits == sum(run.payouts) + run.remainder
        assert all(p >= 0 for p in run.payouts)
        assert run.remainder >= deposits - sum(run.payouts) - 0  # never loses more than the bounty
        assert max(gas for _, gas in run.steps) <= gas_cap
    finally:
        w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]


def test_bounty_exhausted_in_the_first_round(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    rng = random.Random(99)
    spec = random_spec(rng, contributions=10, flippers=0.0, n=30)
    spec.bounty = 1  # one wei: r = R = 1 in round one, whatever the scores
    run = run_market(w3, factory, accounts, spec)
    assert run.mirror is not None
    assert len(run.mirror.rounds) == 1
    assert run.client.rounds() == [(1, 0, 0)]
    assert run.payouts == list(run.mirror.payouts)
