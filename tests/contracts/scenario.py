"""Random markets run end to end on anvil, for the lifecycle and differential tests."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from web3 import Web3

from market import replay
from market.chain import FactoryClient, MarketClient, MarketParams
from market.merkle import test_sample_tree
from market.model import Perceptron
from market.rewards import RewardResult
from market.steps import next_step
from market.types import Phase, Sample, TestSample
from tests.contracts.chaintools import increase_time, mine, send

GAS_CAP = 15_000_000


@dataclass
class MarketSpec:
    """Everything that defines a market run: data, model, parameters, contributions."""

    dim: int
    test: list[TestSample]
    portions: int
    weights: list[int]
    intercept: int
    learning_rate: int
    bounty: int
    min_stake: int
    allow_greater: bool
    # (account index, sample, value sent)
    contributions: list[tuple[int, Sample, int]] = field(default_factory=list)
    max_features: int = 16


def hidden_rule(dim: int, rng: random.Random) -> list[int]:
    return [rng.choice((-3, -2, -1, 1, 2, 3)) for _ in range(dim)]


def random_sample(
    rng: random.Random, dim: int, rule: list[int], k: int, flip: bool = False
) -> Sample:
    features = tuple(sorted(rng.sample(range(dim), k)))
    label = 1 if sum(rule[j] for j in features) > 0 else 0
    return Sample(features, 1 - label if flip else label)


def random_spec(
    rng: random.Random,
    *,
    contributions: int,
    flippers: float = 0.3,
    n: int | None = None,
    dim: int | None = None,
    accounts: int = 8,
) -> MarketSpec:
    dim = dim or rng.choice((8, 16, 32, 64))
    n = n or rng.randint(4, 40)
    max_features = min(dim, rng.choice((3, 5, 8)))
    rule = hidden_rule(dim, rng)
    test = [
        TestSample(i, rng.randbytes(32), s.features, s.label)
        for i, s in enumerate(
            random_sample(rng, dim, rule, rng.randint(1, max_features)) for _ in range(n)
        )
    ]
    min_stake = rng.choice((10**6, 10**15, 7 * 10**14 + 3))
    allow_greater = rng.random() < 0.5
    spec = MarketSpec(
        dim=dim,
        test=test,
        portions=rng.randint(2, min(n, 6)),
        weights=[rng.randint(-2, 2) if rng.random() < 0.3 else 0 for _ in range(dim)],
        intercept=rng.randint(-2, 2),
        learning_rate=rng.choice((1, 1, 2, 5)),
        bounty=rng.choice((1, 10**9, 10**18, rng.randint(1, 10**18))),
        min_stake=min_stake,
        allow_greater=allow_greater,
        max_features=max_features,
    )
    bad_accounts = {a for a in range(1, accounts + 1) if rng.random() < flippers}
    for _ in range(contributions):
        account = rng.randint(1, accounts)
        flip = account in bad_accounts
        sample = random_sample(rng, dim, rule, rng.randint(1, max_features), flip=flip)
        value = min_stake + (rng.randint(0, 3 * min_stake) if rng.random() < 0.5 else 0)
        spec.contributions.append((account, sample, value))
    return spec


@dataclass
class MarketRun:
    client: MarketClient
    spec: MarketSpec
    mirror: RewardResult | None
    scored: list[int]  # A_0 .. A_K from ContributionsScored
    payouts: list[int]
    remainder: int
    steps: list[tuple[str, int]]  # (step name, gas used)


def launch(
    w3: Web3, factory: FactoryClient, provider: LocalAccount, spec: MarketSpec, duration: int = 3600
) -> MarketClient:
    now = int(w3.eth.get_block("latest")["timestamp"])
    tree = test_sample_tree(spec.test)
    params = MarketParams(
        test_root=tree.root,
        test_size=len(spec.test),
        portions=spec.portions,
        dim=spec.dim,
        max_features=spec.max_features,
        intercept=spec.intercept,
        learning_rate=spec.learning_rate,
        min_stake=spec.min_stake,
        allow_greater_deposits=spec.allow_greater,
        min_contributions=0,
        earliest_end=now + duration // 2,
        latest_end=now + duration,
        reveal_window=duration,
    )
    model = Perceptron(
        weights=spec.weights, intercept=spec.intercept, learning_rate=spec.learning_rate
    )
    receipt = send(
        w3, provider, factory.create_market(params, model.weights_bytes()), value=spec.bounty
    )
    return MarketClient(
        w3, factory.market_from_receipt(receipt), created_block=receipt["blockNumber"]
    )


def drive(
    w3: Web3,
    client: MarketClient,
    operator: LocalAccount,
    spec: MarketSpec,
    *,
    gas_cap: int = GAS_CAP,
    until: Phase | None = None,
    max_steps: int = 10_000,
) -> list[tuple[str, int]]:
    """Send next_step until nothing is due (moving time when only the clock is missing)."""
    tree = test_sample_tree(spec.test)
    done: list[tuple[str, int]] = []
    for _ in range(max_steps):
        if until is not None and client.phase() == until:
            return done
        step = next_step(
            client, gas_cap=gas_cap, secrets=(tree, spec.test), sender=operator.address
        )
        if step is None:
            phase = client.phase()
            if phase == Phase.COMMITTED:
                mine(w3)
                continue
            if phase == Phase.PARTICIPATION:
                params = client.params()
                now = int(w3.eth.get_block("latest")["timestamp"])
                increase_time(w3, max(1, params.earliest_end - now))
                continue
            return done
        receipt = send(w3, operator, step.call, gas=step.gas)
        assert receipt["gasUsed"] <= gas_cap, (step.name, receipt["gasUsed"])
        done.append((step.name, int(receipt["gasUsed"])))
    raise AssertionError("the market did not settle")


def contribute_all(
    w3: Web3, client: MarketClient, accounts: list[LocalAccount], spec: MarketSpec
) -> None:
    for account_index, sample, value in spec.contributions:
        send(
            w3,
            accounts[account_index],
            client.contribute(sample.features, sample.label),
            value=value,
        )


def mirror_of(client: MarketClient, spec: MarketSpec) -> RewardResult:
    """The Python mirror's result for what the chain holds (test set in reveal order)."""
    return replay.mirror(client)


def run_market(
    w3: Web3,
    factory: FactoryClient,
    accounts: list[LocalAccount],
    spec: MarketSpec,
    *,
    gas_cap: int = GAS_CAP,
) -> MarketRun:
    provider = accounts[0]
    client = launch(w3, factory, provider, spec)
    drive(w3, client, provider, spec, gas_cap=gas_cap, until=Phase.PARTICIPATION)
    contribute_all(w3, client, accounts, spec)
    steps = drive(w3, client, provider, spec, gas_cap=gas_cap)
    assert client.phase() == Phase.COLLECT
    count, _ = client.contribution_stats()
    scored: list[int] = []
    for _, initial, values in client.scored():
        if not scored:
            scored.append(initial)
        scored.extend(values)
    payouts = [client.payout_of(i) for i in range(1, count + 1)]
    mirror = mirror_of(client, spec) if count else None
    return MarketRun(client, spec, mirror, scored, payouts, client.provider_remainder(), steps)


def seed_from_env(default: int) -> int:
    return int(os.environ.get("MARKET_TEST_SEED", default))
