"""A market's public inputs rebuilt from the chain, and the mirror's result on them.

Everything here comes from events and transaction inputs: the initial model from
``MarketInitialized``, the contributions from ``ContributionAdded``, the test set from the
``revealBatch`` calls in reveal order. The planner, the status cache, the CLI and the tests
all read a market through these functions.
"""

from __future__ import annotations

from market.chain import MarketClient
from market.encoding import decode_reveal_items, decode_sample
from market.model import Perceptron
from market.rewards import Contribution, RewardResult, compute_rewards
from market.types import Address, TestSample, Wei


def initial_model(client: MarketClient) -> Perceptron:
    """The model the market was launched with."""
    init = client.initialized()
    params = init["params"]
    return Perceptron.from_weights_bytes(
        init["initial_weights"],
        intercept=params.intercept,
        learning_rate=params.learning_rate,
        dim=params.dim,
    )


def contributions(client: MarketClient) -> list[Contribution]:
    """Every contribution in submission order, with its depositor and charged deposit."""
    return [
        Contribution(Address(r.contributor), Wei(r.deposit), decode_sample(r.sample))
        for r in client.contributions()
    ]


def test_set(client: MarketClient) -> list[TestSample]:
    """The revealed test samples outside the public portion, in reveal order."""
    return [item for batch in client.revealed_batches() for item in decode_reveal_items(batch)]


test_set.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name


def mirror(client: MarketClient) -> RewardResult:
    """The Python mirror's result on what the chain holds (the test set must be revealed)."""
    init = client.initialized()
    return compute_rewards(
        model=initial_model(client),
        test=test_set(client),
        contributions=contributions(client),
        bounty=int(init["bounty"]),
        min_stake=init["params"].min_stake,
    )
