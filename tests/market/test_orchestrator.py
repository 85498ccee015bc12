"""The orchestrator without Celery: launch, then reconcile/advance until the market settles."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market import status as status_cache
from market.encoding import decode_sample
from market.errors import InvalidParams
from market.launch import LaunchSpec, launch_market
from market.model import Perceptron
from market.orchestrator import Orchestrator
from market.rewards import Contribution, compute_rewards
from market.steps import revealed_test_set
from market.types import Address, Phase, Sample, Wei
from tests.contracts.chaintools import increase_time, mine, send


def _sample(rng: random.Random, dim: int, rule: list[int], flip: bool = False) -> Sample:
    features = tuple(sorted(rng.sample(range(dim), rng.randint(2, 6))))
    label = int(sum(rule[j] for j in features) > 0)
    return Sample(features, 1 - label if flip else label)


@pytest.fixture
def orchestrator(make_service: Callable[..., Orchestrator]) -> Orchestrator:
    return make_service()


def _drive(w3: Web3, orch: Orchestrator, rounds: int = 200) -> None:
    for _ in range(rounds):
        due = orch.reconcile()
        if not due:
            market = orch.registry.client(orch.registry.markets().popitem()[0])
            phase = market.phase()
            if phase == Phase.COLLECT and orch.registry.active() == []:
                return
            if phase == Phase.PARTICIPATION:
                increase_time(w3, 120)
            else:
                mine(w3)
            continue
        for address in due:
            orch.advance(address)
    raise AssertionError("the market did not finish")


def test_launch_then_orchestrate_to_collect(
    w3: Web3, accounts: list[LocalAccount], orchestrator: Orchestrator, snapshot: None
) -> None:
    rng = random.Random(3)
    dim = 24
    rule = [rng.choice((-2, -1, 1, 2)) for _ in range(dim)]
    spec = LaunchSpec(
        test_set=[_sample(rng, dim, rule) for _ in range(60)],
        dim=dim,
        bounty=10**18,
        min_stake=10**16,
        portions=5,
        earliest_end_s=300,
        latest_end_s=600,
        reveal_window_s=600,
        metadata={"name": "test market"},
    )
    launched = launch_market(orchestrator, spec)
    assert orchestrator.registry.metadata(launched.address) == {
        "name": "test market",
        "launched_at": orchestrator.registry.metadata(launched.address)["launched_at"],  # type: ignore[index]
    }
    market = orchestrator.registry.client(launched.address)
    assert orchestrator.registry.client(launched.address) is market  # bindings are reused
    # the service draws and reveals the public portion by itself
    while market.phase() == Phase.COMMITTED:
        mine(w3)
        for address in orchestrator.reconcile():
            orchestrator.advance(address)
    assert market.public_portion() is not None
    for i in range(20):
        account = accounts[1 + i % 4]
        sample = _sample(rng, dim, rule, flip=(i % 4 == 3))
        send(w3, account, market.contribute(sample.features, sample.label), value=10**16)
    # the due check reads every market's phase and count in one batch, as the chain has them
    assert orchestrator._phases_and_counts([market]) == [(Phase.PARTICIPATION, 20)]
    _drive(w3, orchestrator)
    assert market.phase() == Phase.COLLECT
    test = revealed_test_set(market.revealed_batches())
    contributions = [
        Contribution(Address(r.contributor), Wei(r.deposit), decode_sample(r.sample))
        for r in market.contributions()
    ]
    mirror = compute_rewards(
        model=Perceptron.zeros(dim),
        test=test,
        contributions=contributions,
        bounty=10**18,
        min_stake=10**16,
    )
    assert [market.payout_of(i) for i in range(1, 21)] == list(mirror.payouts)
    assert market.provider_withdrawn()  # the operator is the provider and took its remainder
    cached = status_cache.read_status(orchestrator.cache, launched.address)
    assert cached is not None and cached["phase"] == "COLLECT" and cached["final"]
    steps = [t["step"] for t in cached["transactions"]]
    # the provider's public reveal drew the portion itself; rounds rode on the last training step
    assert {"reveal_public", "end", "reveal", "prepare", "train"} <= set(steps)
    assert "draw" not in steps
    who = accounts[1].address
    view = status_cache.contributor_status(
        cached, status_cache.read_contributors(orchestrator.cache, launched.address), who
    )
    assert view["state"] == "claimable"
    assert int(view["amount"]) == mirror.account_payouts[Address(who)]
    assert view["projected_payout"] == str(mirror.account_payouts[Address(who)])

    # a withdrawal after the market finished still reaches the cache (throttled refresh)
    ids = [c["id"] for c in view["contributions"]]
    send(w3, accounts[1], market.withdraw(ids))
    for key in orchestrator.cache.scan_iter("market:withdrawals-refreshed:*"):
        orchestrator.cache.delete(key)
    orchestrator.reconcile()
    view = status_cache.contributor_status(
        status_cache.read_status(orchestrator.cache, launched.address) or {},
        status_cache.read_contributors(orchestrator.cache, launched.address),
        who,
    )
    assert view["state"] == "withdrawn"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"portions": 1}, "portions"),
        ({"bounty": 0}, "bounty"),
        ({"test_set": [Sample((1,), 0)]}, "test_set"),
        ({"test_set": [Sample((1,), 2)] * 4}, "test_set[0]"),
        ({"test_set": [Sample((3, 1), 0)] * 4}, "test_set[0]"),
        ({"initial_weights": [0] * 3}, "initial_weights"),
        ({"min_stake": 0}, "min_stake"),
    ],
)
def test_bad_launch_is_refused_before_sending(
    w3: Web3, orchestrator: Orchestrator, change: dict[str, object], field: str
) -> None:
    base: dict[str, object] = {
        "test_set": [Sample((1, 2), 1)] * 4,
        "dim": 8,
        "bounty": 10**18,
        "min_stake": 10**16,
        "portions": 2,
    }
    nonce = w3.eth.get_transaction_count(orchestrator.account.address)
    with pytest.raises(InvalidParams) as info:
        launch_market(orchestrator, LaunchSpec(**{**base, **change}))  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)
    assert w3.eth.get_transaction_count(orchestrator.account.address) == nonce


def test_steps_that_cannot_be_split_must_fit_the_gas_cap() -> None:
    from market.launch import check_steps_fit

    samples = [Sample(tuple(range(0, 60, 2)), i % 2) for i in range(400)]
    spec = LaunchSpec(test_set=samples, dim=64, bounty=1, min_stake=1, portions=2)
    check_steps_fit(spec, 30, 15_000_000)
    # half the test set in one public reveal does not fit 2M gas
    with pytest.raises(InvalidParams) as info:
        check_steps_fit(spec, 30, 2_000_000)
    assert info.value.field == "portions"
    # with small portions the reveal fits, but the one-off index check does not
    small = LaunchSpec(test_set=samples, dim=64, bounty=1, min_stake=1, portions=100)
    with pytest.raises(InvalidParams) as info:
        check_steps_fit(small, 30, 2_000_000)
    assert info.value.field == "test_set"
