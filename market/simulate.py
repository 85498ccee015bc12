"""The blog's prediction-market simulation, off-chain, with the exact reward mirror.

Honest agents contribute correctly labelled samples from a shared pool; adversaries flip
the labels of theirs and deposit more per sample (the "bad contributor willing to spend
more" of the post). Contributions arrive over time, interleaved by each agent's rate. The
results come from :func:`market.rewards.compute_rewards`, the computation the contract
reproduces to the wei, so a simulated outcome is what the same market would pay on-chain.

The data preparation (:func:`prepare_data`) and the agents' plan (:func:`plan_contributions`)
are shared with the demo, which runs the same plan through the real stack.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from market.datasets import Dataset, load_builtin
from market.features import DEFAULT_N_BINS, BinnedNumericEncoder, FeatureSpec
from market.model import Perceptron
from market.rewards import Contribution, RewardResult, compute_rewards
from market.types import Address, Sample, TestSample, Wei

ETHER = 10**18


@dataclass(frozen=True)
class Agent:
    """A participant of the simulation: honest or a label-flipper, with its deposit size."""

    name: str
    honest: bool
    # Deposit per contribution, as a multiple of the market's minimum stake.
    stake_multiple: int = 1
    # Relative contribution rate: an agent with rate 2 contributes twice as often.
    rate: float = 1.0


@dataclass(frozen=True)
class PlannedContribution:
    """One contribution of the plan: who sends which sample with which deposit."""

    agent: int  # index into the agents
    sample: Sample
    deposit: int


@dataclass(frozen=True)
class MarketData:
    """A builtin dataset split for a market: the provider's test set, the pool, a held-out set."""

    name: str
    spec: FeatureSpec
    test: list[Sample]  # the provider's secret test set
    pool: list[Sample]  # what the agents draw their samples from (true labels)
    holdout: list[Sample]  # never seen by the market: an independent accuracy check


@dataclass(frozen=True)
class MarketTrace:
    """What the tables and plots show of a finished market, per agent."""

    agents: tuple[Agent, ...]
    owners: tuple[int, ...]  # agent index of each contribution, in order
    deposits: tuple[int, ...]  # wei deposited per agent
    payouts: tuple[int, ...]  # wei paid out per agent
    accuracies: tuple[float, ...]  # A_0/m .. A_K/m: test accuracy after each contribution
    # Balance of each agent (wei, β/m summed, fractional) after each round; row 0 = deposits.
    balances: tuple[tuple[float, ...], ...]
    bounty: int
    provider_remainder: int

    @property
    def gains(self) -> tuple[int, ...]:
        """Payout minus deposit, per agent."""
        return tuple(p - d for p, d in zip(self.payouts, self.deposits, strict=True))


def default_agents(honest: int = 4, adversaries: int = 1, adversary_stake: int = 3) -> list[Agent]:
    """``honest`` honest agents and ``adversaries`` label-flippers depositing more each."""
    agents = [Agent(f"honest-{k + 1}", True) for k in range(honest)]
    agents += [
        Agent(f"adversary-{k + 1}", False, stake_multiple=adversary_stake, rate=1.5)
        for k in range(adversaries)
    ]
    return agents


def prepare_data(
    name: str = "breast_cancer",
    *,
    seed: int = 0,
    test_fraction: float = 0.3,
    holdout_fraction: float = 0.15,
    n_bins: int = DEFAULT_N_BINS,
) -> MarketData:
    """Split a builtin dataset; bins fit on the provider's test data only (what it owns)."""
    dataset: Dataset = load_builtin(name)
    test_part, holdout_part, pool_part = dataset.split([test_fraction, holdout_fraction], seed)
    spec = FeatureSpec(BinnedNumericEncoder.fit(test_part, n_bins))
    return MarketData(
        name=name,
        spec=spec,
        test=spec.encode(test_part),
        pool=spec.encode(pool_part),
        holdout=spec.encode(holdout_part),
    )


def plan_contributions(
    pool: Sequence[Sample],
    agents: Sequence[Agent],
    count: int,
    *,
    min_stake: int,
    seed: int = 0,
) -> list[PlannedContribution]:
    """``count`` contributions over time: agents take turns by rate, samples from the pool.

    Each sample is used once (the pool must hold ``count`` samples); adversaries flip labels.
    """
    if count > len(pool):
        raise ValueError(f"count={count} exceeds the pool of {len(pool)} samples")
    if not agents:
        raise ValueError("at least one agent is needed")
    rng = random.Random(seed)
    order = list(range(len(pool)))
    rng.shuffle(order)
    weights = [a.rate for a in agents]
    plan = []
    for k in range(count):
        who = rng.choices(range(len(agents)), weights=weights)[0]
        agent = agents[who]
        sample = pool[order[k]]
        if not agent.honest:
            sample = Sample(sample.features, 1 - sample.label)
        plan.append(PlannedContribution(who, sample, min_stake * agent.stake_multiple))
    return plan


def remove_public_portion(test: Sequence[Sample], portions: int, portion: int) -> list[TestSample]:
    """The test samples outside portion ``portion`` (the ones a market scores with)."""
    n = len(test)
    start, end = portion * n // portions, (portion + 1) * n // portions
    return [
        TestSample(i, b"\x00" * 32, s.features, s.label)
        for i, s in enumerate(test)
        if not start <= i < end
    ]


def trace_of(
    result: RewardResult,
    agents: Sequence[Agent],
    plan: Sequence[PlannedContribution],
    accuracies: Sequence[int] | None = None,
) -> MarketTrace:
    """Per-agent deposits, payouts and balances through the rounds of a reward result.

    ``accuracies`` (the ``A_i``) default to the result's; the demo passes the chain's.
    """
    m = max(result.test_size, 1)
    owners = tuple(p.agent for p in plan)
    n = len(agents)

    def per_agent(values: Sequence[int], scale: int = 1) -> tuple[float, ...]:
        totals = [0.0] * n
        for owner, value in zip(owners, values, strict=True):
            totals[owner] += value / scale
        return tuple(totals)

    rows = [per_agent([p.deposit for p in plan])]
    rows += [per_agent(r.balances, m) for r in result.rounds]
    deposits = [0] * n
    payouts = [0] * n
    for owner, p, payout in zip(owners, plan, result.payouts, strict=True):
        deposits[owner] += p.deposit
        payouts[owner] += payout
    scored = result.accuracies if accuracies is None else accuracies
    return MarketTrace(
        agents=tuple(agents),
        owners=owners,
        deposits=tuple(deposits),
        payouts=tuple(payouts),
        accuracies=tuple(a / m for a in scored),
        balances=tuple(rows),
        bounty=int(result.bounty),
        provider_remainder=int(result.provider_remainder),
    )


@dataclass(frozen=True)
class SimulationResult:
    """A simulated market: the trace, the mirror's result, and hold-out accuracies."""

    trace: MarketTrace
    result: RewardResult
    holdout_before: float
    holdout_after: float


def simulate(
    *,
    dataset: str = "breast_cancer",
    contributions: int = 180,
    agents: Sequence[Agent] | None = None,
    bounty: int = ETHER,
    min_stake: int = ETHER // 100,
    portions: int = 10,
    seed: int = 0,
) -> SimulationResult:
    """Run a whole market off-chain: the data split, the plan, the exact reward computation."""
    agents = list(agents) if agents is not None else default_agents()
    data = prepare_data(dataset, seed=seed)
    plan = plan_contributions(data.pool, agents, contributions, min_stake=min_stake, seed=seed)
    # The contract draws the public portion from a block hash; a seeded draw stands in here.
    portion = int(np.random.default_rng([seed, 3]).integers(portions))
    test = remove_public_portion(data.test, portions, portion)
    model = Perceptron.zeros(data.spec.dim)
    result = compute_rewards(
        model=model,
        test=test,
        contributions=[
            Contribution(Address(agents[p.agent].name), Wei(p.deposit), p.sample) for p in plan
        ],
        bounty=bounty,
        min_stake=min_stake,
    )
    trained = model.copy()
    for p in plan:
        trained.update(p.sample.features, p.sample.label)
    return SimulationResult(
        trace=trace_of(result, agents, plan),
        result=result,
        holdout_before=model.accuracy(data.holdout),
        holdout_after=trained.accuracy(data.holdout),
    )


__all__ = [
    "ETHER",
    "Agent",
    "MarketData",
    "MarketTrace",
    "PlannedContribution",
    "SimulationResult",
    "default_agents",
    "plan_contributions",
    "prepare_data",
    "remove_public_portion",
    "simulate",
    "trace_of",
]
