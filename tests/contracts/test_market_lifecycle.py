"""A whole market on anvil, from launch to withdrawals, against the Python mirror."""

from __future__ import annotations

import random

from eth_account.signers.local import LocalAccount
from web3 import Web3

from market.chain import FactoryClient
from market.types import Phase, TestSample
from tests.contracts.chaintools import send
from tests.contracts.scenario import MarketSpec, hidden_rule, random_sample, random_spec, run_market


def _honest_and_flippers(rng: random.Random, n: int = 120, k: int = 60) -> MarketSpec:
    """Accounts 1..4 contribute honest labels; account 5 flips labels and deposits 3×."""
    spec = random_spec(rng, contributions=0, n=n, dim=32)
    spec.bounty = 10**18
    spec.min_stake = 10**16
    spec.allow_greater = True
    spec.max_features = 8
    spec.weights = [0] * spec.dim
    spec.intercept = 0
    spec.learning_rate = 1
    rule = hidden_rule(spec.dim, rng)
    spec.test = []
    for i in range(n):
        s = random_sample(rng, spec.dim, rule, rng.randint(3, 8))
        spec.test.append(TestSample(i, rng.randbytes(32), s.features, s.label))
    for i in range(k):
        account = 1 + i % 5
        flip = account == 5
        sample = random_sample(rng, spec.dim, rule, rng.randint(3, 8), flip=flip)
        spec.contributions.append((account, sample, spec.min_stake * (3 if flip else 1)))
    return spec


def test_full_lifecycle_matches_mirror_to_the_wei(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    rng = random.Random(7)
    spec = _honest_and_flippers(rng)
    # given a market driven through every phase
    run = run_market(w3, factory, accounts, spec)
    client = run.client
    names = [name for name, _ in run.steps]
    assert names[0] == "end" and "reveal" in names and "train" in names

    # then the contract's A_i, payouts and remainder equal the mirror's
    assert run.mirror is not None
    assert run.scored == list(run.mirror.accuracies)
    assert run.payouts == list(run.mirror.payouts)
    assert run.remainder == run.mirror.provider_remainder
    count, deposits = client.contribution_stats()
    assert spec.bounty + deposits == sum(run.payouts) + run.remainder

    # when everyone withdraws, balances move by exactly the payouts
    by_account: dict[int, list[int]] = {}
    for cid, (account, _, _) in enumerate(spec.contributions, start=1):
        by_account.setdefault(account, []).append(cid)
    for account, ids in by_account.items():
        before = w3.eth.get_balance(accounts[account].address)
        receipt = send(w3, accounts[account], client.withdraw(ids))
        fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
        after = w3.eth.get_balance(accounts[account].address)
        assert after - before + fee == sum(run.payouts[i - 1] for i in ids)
    assert all(client.withdrawn(i) for i in range(1, count + 1))
    # the provider's remainder was withdrawn by the driver (the operator is the provider)
    assert client.provider_withdrawn()
    assert client.balance() == 0
    assert client.phase() == Phase.COLLECT

    # and the label-flipper lost money while the honest accounts gained together
    deposited = {a: sum(v for b, _, v in spec.contributions if b == a) for a in range(1, 6)}
    assert run.mirror.account_payouts[accounts[5].address] < deposited[5]
    honest = sum(run.mirror.account_payouts[accounts[a].address] for a in range(1, 5))
    assert honest > sum(deposited[a] for a in range(1, 5))


def test_small_gas_budget_still_progresses(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    rng = random.Random(11)
    spec = random_spec(rng, contributions=150, n=30, dim=16, flippers=0.5)
    run = run_market(w3, factory, accounts, spec, gas_cap=800_000)
    assert run.mirror is not None
    assert run.payouts == list(run.mirror.payouts)
    assert max(gas for _, gas in run.steps) <= 800_000
    # several training and several round transactions were needed, and each made progress
    names = [name for name, _ in run.steps]
    assert names.count("train") > 2 and names.count("rewards") > 1
