"""The reward computation of DESIGN.md: examples worked by hand, and properties of random markets.

Two independent re-implementations check the reference: the lazy-balance rounds of
docs/protocol.md (what the contract runs) and an integer transcription of the 0xDeCA10B
grouped simulation (which agrees when it never drives a balance below zero).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.errors import InvalidParams, InvalidSample
from market.model import Perceptron
from market.rewards import (
    Contribution,
    RewardResult,
    cancel_refunds,
    compute_rewards,
    projected_payouts,
    run_rounds,
    training_pass,
)
from market.types import Address, Sample, TestSample, Wei

ALICE, BOB, MALLORY = Address("0xA11CE"), Address("0xB0B"), Address("0x3A11047")


def salted(index: int, features: tuple[int, ...], label: int) -> TestSample:
    return TestSample(index, index.to_bytes(32, "big"), features, label)


def give(who: Address, features: tuple[int, ...], label: int, deposit: int = 10) -> Contribution:
    return Contribution(who, Wei(deposit), Sample(features, label))


# Four test samples, one feature each. The zero model predicts 0 everywhere, so it gets the
# two label-0 samples right: A_0 = 2.
TEST = [salted(0, (0,), 1), salted(1, (1,), 1), salted(2, (2,), 0), salted(3, (3,), 0)]


def zero_model() -> Perceptron:
    return Perceptron.zeros(4, intercept=0, learning_rate=1)


# ----------------------------------------------------------------------------- by hand


def test_all_good_contributions_share_the_whole_bounty() -> None:
    # alice teaches feature 0 → label 1 (t0 becomes right): A_1 = 3.
    # bob teaches feature 1 → label 1 (t1 becomes right):   A_2 = 4.
    # m = 4, β = d·m = 40 each. Round 1: s = (1, 1), no negative score, so r = R = 100:
    # β = 40 + 100 = 140 each, R = 0, final. Payout ⌊140/4⌋ = 35 each.
    # Provider: 100 + 20 − 70 = 50 (the test set is only half learned, half the bounty stays).
    result = compute_rewards(
        model=zero_model(),
        test=TEST,
        contributions=[give(ALICE, (0,), 1), give(BOB, (1,), 1)],
        bounty=100,
        min_stake=10,
    )
    assert result.outcome == "rewarded"
    assert result.accuracies == (2, 3, 4)
    assert result.balances == (140, 140)
    assert [(r.amount, r.total, r.remaining, r.removed) for r in result.rounds] == [
        (100, 100, 0, ())
    ]
    assert result.payouts == (35, 35)
    assert result.account_payouts == {ALICE: 35, BOB: 35}
    assert result.provider_remainder == 50


def test_label_flipper_loses_its_deposit() -> None:
    # alice: feature 0 → 1, w0 = 1, t0 right:                 A_1 = 3
    # mallory: feature 0 → 0, the model says 1, w0 = 0, t0 wrong: A_2 = 2
    # bob: feature 1 → 1, w1 = 1, t1 right (t0 still wrong):   A_3 = 3
    # m = 4, θ = minStake·m = 40, β = (40, 40, 40), R = 100.
    # Round 1: s = (1, −1, 1); mallory's time to zero ⌊40/1⌋ = 40 < R, so r = 40:
    #   β = (80, 0, 80), R = 60; mallory is below θ and leaves.
    # Round 2: active (alice, bob); s_alice = A_1 − A_0 = 1, s_bob = A_3 − A_1 = 0 (bob's gain
    #   only repaired what mallory broke); r = R = 60: β = (140, 0, 80), R = 0, final.
    # Payouts ⌊β/4⌋ = (35, 0, 20); provider: 100 + 30 − 55 = 75.
    result = compute_rewards(
        model=zero_model(),
        test=TEST,
        contributions=[give(ALICE, (0,), 1), give(MALLORY, (0,), 0), give(BOB, (1,), 1)],
        bounty=100,
        min_stake=10,
    )
    assert result.accuracies == (2, 3, 2, 3)
    assert [r.scores for r in result.rounds] == [(1, -1, 1), (1, 0)]
    assert [(r.amount, r.remaining, r.removed) for r in result.rounds] == [
        (40, 60, (2,)),
        (60, 0, ()),
    ]
    assert result.rounds[0].balances == (80, 0, 80)
    assert result.balances == (140, 0, 80)
    assert result.payouts == (35, 0, 20)
    assert result.account_payouts == {ALICE: 35, MALLORY: 0, BOB: 20}
    assert result.provider_remainder == 75


def test_bounty_exhausted_in_the_first_round() -> None:
    # The market of the label flipper with a bounty of 20: mallory's time to zero (40) is
    # longer than the bounty, so r = R = 20: β = (40+20, 40−20, 40+20) = (60, 20, 60), final
    # with no removal. Payouts (15, 5, 15); mallory keeps half its deposit.
    # Provider: 20 + 30 − 35 = 15.
    result = compute_rewards(
        model=zero_model(),
        test=TEST,
        contributions=[give(ALICE, (0,), 1), give(MALLORY, (0,), 0), give(BOB, (1,), 1)],
        bounty=20,
        min_stake=10,
    )
    assert len(result.rounds) == 1
    assert (result.rounds[0].amount, result.rounds[0].removed) == (20, ())
    assert result.balances == (60, 20, 60)
    assert result.payouts == (15, 5, 15)
    assert result.provider_remainder == 15


def test_the_first_balance_to_reach_zero_sets_the_round_not_the_worst_score() -> None:
    # A = (4, 2, 1, 4), m = 4, deposits (100, 3, 10), minStake 1 (θ = 4), bounty 1000.
    # β = (400, 12, 40). Round 1: s = (−2, −1, 3); times to zero ⌊400/2⌋ = 200, ⌊12/1⌋ = 12:
    #   r = 12 (the simulation would take the worst score, −2, and r = 200, driving β_2 to
    #   −188). β = (376, 0, 76), R = 988, contribution 2 leaves.
    # Round 2: s = (−2, A_3 − A_1 = 2); r = ⌊376/2⌋ = 188: β = (0, 0, 452), R = 800; 1 leaves.
    # Round 3: s_3 = A_3 − A_0 = 0; r = 800, nothing moves; final.
    balances, rounds = run_rounds([4, 2, 1, 4], [100, 3, 10], bounty=1000, min_stake=1, m=4)
    assert [(r.amount, r.removed) for r in rounds] == [(12, (2,)), (188, (1,)), (800, ())]
    assert balances == [0, 0, 452]
    assert [r.total for r in rounds] == [12, 200, 1000]


def test_payouts_round_down_and_the_dust_goes_to_the_provider() -> None:
    # Three test samples: the zero model gets t2 right, A_0 = 1; alice's feature-0 sample
    # makes t0 right, A_1 = 2. m = 3, β = 10·3 = 30, r = R = 10: β = 40, payout ⌊40/3⌋ = 13.
    # Provider: 10 + 10 − 13 = 7 (1/3 wei of alice's exact 13⅓ stays with the provider).
    test = [salted(0, (0,), 1), salted(1, (1,), 1), salted(2, (2,), 0)]
    result = compute_rewards(
        model=Perceptron.zeros(3),
        test=test,
        contributions=[give(ALICE, (0,), 1)],
        bounty=10,
        min_stake=10,
    )
    assert result.accuracies == (1, 2)
    assert result.balances == (40,)
    assert result.payouts == (13,)
    assert result.provider_remainder == 7


def test_account_payouts_add_up_each_contribution_floored_separately() -> None:
    # Both of alice's samples help: A = (2, 3, 4), s = (1, 1), β = 40 each, r = R = 6:
    # β = 46 each. Per contribution ⌊46/4⌋ = 11, so alice gets 22 (⌊92/4⌋ would be 23).
    result = compute_rewards(
        model=zero_model(),
        test=TEST,
        contributions=[give(ALICE, (0,), 1), give(ALICE, (1,), 1)],
        bounty=6,
        min_stake=10,
    )
    assert result.balances == (46, 46)
    assert result.account_payouts == {ALICE: 22}
    assert result.provider_remainder == 6 + 20 - 22


def test_no_contribution_returns_the_bounty() -> None:
    result = compute_rewards(
        model=zero_model(), test=TEST, contributions=[], bounty=100, min_stake=1
    )
    assert result.outcome == "refunded"
    assert result.rounds == ()
    assert result.accuracies == (2,)
    assert result.provider_remainder == 100
    assert result.account_payouts == {}


def test_empty_test_set_refunds_every_deposit() -> None:
    contributions = [give(ALICE, (0,), 1, deposit=12), give(BOB, (1,), 0, deposit=10)]
    result = compute_rewards(
        model=zero_model(), test=[], contributions=contributions, bounty=100, min_stake=10
    )
    assert result.outcome == "refunded"
    assert result.payouts == (12, 10)
    assert result.account_payouts == {ALICE: 12, BOB: 10}
    assert result.provider_remainder == 100


def test_zero_bounty_is_one_round_of_nothing() -> None:
    result = compute_rewards(
        model=zero_model(),
        test=TEST,
        contributions=[give(ALICE, (0,), 1), give(MALLORY, (0,), 0)],
        bounty=0,
        min_stake=10,
    )
    assert [(r.amount, r.remaining, r.removed) for r in result.rounds] == [(0, 0, ())]
    assert result.payouts == (10, 10)
    assert result.provider_remainder == 0


def test_projected_payouts_are_the_account_payouts() -> None:
    contributions = [give(ALICE, (0,), 1), give(MALLORY, (0,), 0), give(BOB, (1,), 1)]
    projected = projected_payouts(
        model=zero_model(), test=TEST, contributions=contributions, bounty=100, min_stake=10
    )
    assert projected == {ALICE: 35, MALLORY: 0, BOB: 20}


def test_training_pass_leaves_the_initial_model_alone() -> None:
    model = zero_model()
    accuracies, trained = training_pass(model, TEST, [give(ALICE, (0,), 1)])
    assert accuracies == [2, 3]
    assert model.weights == [0, 0, 0, 0]
    assert trained.weights == [1, 0, 0, 0]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bounty": -1}, "bounty"),
        ({"min_stake": 0}, "minStake"),
        ({"contributions": [give(ALICE, (0,), 1, deposit=9)]}, "deposit"),
    ],
)
def test_bad_market_parameters_name_the_field(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {
        "model": zero_model(),
        "test": TEST,
        "contributions": [give(ALICE, (0,), 1)],
        "bounty": 100,
        "min_stake": 10,
    }
    with pytest.raises(InvalidParams) as caught:
        compute_rewards(**(arguments | kwargs))  # type: ignore[arg-type]
    assert caught.value.field == field


def test_bad_samples_are_refused() -> None:
    with pytest.raises(InvalidSample) as caught:
        compute_rewards(
            model=zero_model(),
            test=TEST,
            contributions=[give(ALICE, (0,), 1), give(BOB, (2, 1), 1)],
            bounty=1,
            min_stake=1,
        )
    assert (caught.value.reason, caught.value.position) == ("order", 1)


# ----------------------------------------------------------------------------- cancel


def test_cancel_splits_the_bounty_pro_rata_to_the_wei() -> None:
    # B = 10, deposits (1, 1, 1): C = (1, 2, 3), D = 3.
    # shares ⌊10/3⌋ − 0 = 3, ⌊20/3⌋ − 3 = 3, ⌊30/3⌋ − 6 = 4: they sum to exactly 10.
    contributions = [give(ALICE, (0,), 1, 1), give(BOB, (0,), 1, 1), give(ALICE, (1,), 0, 1)]
    refunds = cancel_refunds(10, contributions)
    assert refunds.shares == (3, 3, 4)
    assert refunds.refunds == (4, 4, 5)
    assert refunds.account_refunds == {ALICE: 9, BOB: 4}
    assert refunds.provider_refund == 0


def test_cancel_without_contributions_returns_the_bounty() -> None:
    refunds = cancel_refunds(10, [])
    assert (refunds.refunds, refunds.provider_refund) == ((), 10)


@given(st.integers(0, 10**21), st.lists(st.integers(1, 10**20), min_size=1, max_size=30))
def test_cancel_shares_sum_to_the_bounty(bounty: int, deposits: list[int]) -> None:
    contributions = [give(Address(f"0x{i % 3}"), (0,), 0, d) for i, d in enumerate(deposits)]
    refunds = cancel_refunds(bounty, contributions)
    assert sum(refunds.shares) == bounty
    assert all(share >= 0 for share in refunds.shares)
    assert sum(refunds.refunds) == bounty + sum(deposits)
    assert sum(refunds.account_refunds.values()) == bounty + sum(deposits)
    total = sum(deposits)
    for d, share in zip(deposits, refunds.shares, strict=True):
        # Within one wei of the exact pro-rata share.
        assert abs(share * total - bounty * d) < total


# ----------------------------------------------------------------------------- properties


@dataclass(frozen=True)
class Market:
    model: Perceptron
    test: list[TestSample]
    contributions: list[Contribution]
    bounty: int
    min_stake: int

    def rewards(self) -> RewardResult:
        return compute_rewards(
            model=self.model,
            test=self.test,
            contributions=self.contributions,
            bounty=self.bounty,
            min_stake=self.min_stake,
        )


@st.composite
def markets(draw: st.DrawFn, unique_accounts: bool = False) -> Market:
    dim = draw(st.integers(1, 6))
    row = st.lists(st.integers(0, dim - 1), min_size=1, max_size=dim, unique=True).map(
        lambda xs: tuple(sorted(xs))
    )
    model = Perceptron(
        weights=draw(st.lists(st.integers(-3, 3), min_size=dim, max_size=dim)),
        intercept=draw(st.integers(-2, 2)),
        learning_rate=draw(st.integers(1, 3)),
    )
    test = [
        salted(i, features, label)
        for i, (features, label) in enumerate(
            draw(st.lists(st.tuples(row, st.integers(0, 1)), max_size=10))
        )
    ]
    min_stake = draw(st.integers(1, 5))
    k = draw(st.integers(0, 12))
    contributions = [
        Contribution(
            Address(f"0x{i if unique_accounts else draw(st.integers(0, 3))}"),
            Wei(draw(st.integers(min_stake, 4 * min_stake))),
            Sample(draw(row), draw(st.integers(0, 1))),
        )
        for i in range(k)
    ]
    bounty = draw(st.integers(0, 500))
    return Market(model, test, contributions, bounty, min_stake)


@given(markets())
def test_conservation_and_bounds(market: Market) -> None:
    result = market.rewards()
    deposits = sum(c.deposit for c in market.contributions)
    # Conservation to the wei.
    assert market.bounty + deposits == sum(result.payouts) + result.provider_remainder
    assert sum(result.account_payouts.values()) == sum(result.payouts)
    assert all(p >= 0 for p in result.payouts)
    # The provider never loses more than the bounty.
    assert result.provider_remainder >= 0
    m = len(market.test)
    assert len(result.accuracies) == len(market.contributions) + 1
    assert all(0 <= a <= m for a in result.accuracies)
    for r in result.rounds:
        assert all(b >= 0 for b in r.balances)  # no balance ever goes below zero
        assert r.amount >= 0
    if result.outcome == "rewarded":
        assert 1 <= len(result.rounds) <= len(market.contributions)
        assert result.rounds[-1].remaining == 0 or not _active_after(result)
        assert result.rounds[-1].total == market.bounty - result.rounds[-1].remaining
        assert result.payouts == tuple(b // m for b in result.balances)
    else:
        assert m == 0 or not market.contributions


def _active_after(result: RewardResult) -> list[int]:
    last = result.rounds[-1]
    return [i for i in last.active if i not in last.removed]


@given(markets())
def test_a_removed_contribution_keeps_its_balance(market: Market) -> None:
    result = market.rewards()
    for number, r in enumerate(result.rounds):
        for i in r.removed:
            assert all(
                later.balances[i - 1] == r.balances[i - 1] for later in result.rounds[number:]
            )
            assert result.balances[i - 1] == r.balances[i - 1]
            assert r.balances[i - 1] < market.min_stake * result.test_size


# ----------------------------------------------------------------------------- cross-checks


def lazy_rounds(
    accuracies: Sequence[int], deposits: Sequence[int], bounty: int, min_stake: int, m: int
) -> tuple[list[int], list[tuple[int, int, int]]]:
    """The rounds as docs/protocol.md lays them out for the contract: lazy balances
    ``β_i(T) = b_i + s_i·T``, a linked list of the active set and a heap of threshold crossings.
    Returns the final balances and ``(total, remaining, removed count)`` per round."""
    k = len(deposits)
    theta = min_stake * m
    base = [d * m for d in deposits]
    score = [accuracies[i + 1] - accuracies[i] for i in range(k)]
    prev = [i - 1 for i in range(k)]  # -1: the initial model
    nxt = [i + 1 if i + 1 < k else -1 for i in range(k)]
    active = [True] * k
    heap: list[tuple[int, int]] = []

    def crossing(i: int) -> int:  # c_i: the first T with β_i(T) < θ
        return (base[i] - theta) // -score[i] + 1

    def zero(i: int) -> int:  # z_i: the T at which ⌊β_i/−s_i⌋ reaches 0
        return base[i] // -score[i]

    for i in range(k):
        if score[i] < 0:
            heapq.heappush(heap, (crossing(i), i))
    total, remaining, events = 0, bounty, []
    alive = k
    while True:
        target = total + remaining
        pending = []
        while heap and heap[0][0] <= target:
            c, i = heapq.heappop(heap)
            if not active[i] or i in pending or score[i] >= 0 or c != crossing(i):
                continue  # stale entry, or a duplicate with an unchanged key
            pending.append(i)
            target = min(target, zero(i))
        if target == total + remaining:
            total, remaining = target, 0
            events.append((total, remaining, 0))
            break
        remaining -= target - total
        total = target
        for i in pending:
            base[i] += score[i] * total  # freeze
            s, score[i], active[i] = score[i], 0, False
            alive -= 1
            p, n = prev[i], nxt[i]
            if p >= 0:
                nxt[p] = n
            if n >= 0:
                prev[n] = p
                balance = base[n] + score[n] * total
                score[n] += s
                base[n] = balance - score[n] * total
                if score[n] < 0:
                    heapq.heappush(heap, (crossing(n), n))
        events.append((total, remaining, len(pending)))
        if alive == 0:
            break
    finals = [base[i] + score[i] * total if active[i] else base[i] for i in range(k)]
    return finals, events


def grouped_simulation(
    accuracies: Sequence[int], deposits: Sequence[int], bounty: int, min_stake: int, m: int
) -> tuple[list[int], bool]:
    """0xDeCA10B's ``PredictionMarket.process_contribution`` with ``group_contributions=True``,
    ``reset_model_during_reward_phase=False`` and one contribution per account, in integers:
    accuracies as counts, balances scaled by ``m``, the round length floored. Returns the final
    balances and whether some balance went below zero."""
    balances = [d * m for d in deposits]
    active = list(range(1, len(deposits) + 1))
    remaining = bounty
    went_negative = False
    while remaining > 0 and active:
        scores: dict[int, int] = {}
        previous = accuracies[0]
        worst, worst_score = 0, None
        for i in active:
            scores[i] = accuracies[i] - previous
            if worst_score is None or scores[i] < worst_score:
                worst, worst_score = i, scores[i]
            previous = accuracies[i]
        assert worst_score is not None
        if worst_score < 0:
            rounds = min(balances[worst - 1] // -worst_score, remaining)
        else:
            rounds = remaining
        remaining -= rounds
        for i in active:
            balances[i - 1] += scores[i] * rounds
            went_negative |= balances[i - 1] < 0
        if remaining > 0:
            active = [i for i in active if balances[i - 1] >= min_stake * m]
    return balances, went_negative


@st.composite
def round_inputs(draw: st.DrawFn) -> tuple[list[int], list[int], int, int, int]:
    m = draw(st.integers(1, 12))
    k = draw(st.integers(1, 15))
    accuracies = draw(st.lists(st.integers(0, m), min_size=k + 1, max_size=k + 1))
    min_stake = draw(st.integers(1, 6))
    deposits = draw(st.lists(st.integers(min_stake, 5 * min_stake), min_size=k, max_size=k))
    bounty = draw(st.integers(0, 300))
    return accuracies, deposits, bounty, min_stake, m


@given(round_inputs())
def test_lazy_heap_rounds_of_the_protocol_equal_the_definition(
    inputs: tuple[list[int], list[int], int, int, int],
) -> None:
    balances, rounds = run_rounds(*inputs)
    lazy_balances, events = lazy_rounds(*inputs)
    assert lazy_balances == balances
    assert events == [(r.total, r.remaining, len(r.removed)) for r in rounds]


@given(round_inputs())
def test_grouped_simulation_agrees_when_no_balance_goes_negative(
    inputs: tuple[list[int], list[int], int, int, int],
) -> None:
    balances, _ = run_rounds(*inputs)
    simulated, went_negative = grouped_simulation(*inputs)
    if not went_negative:
        assert simulated == balances


def test_grouped_simulation_differs_only_by_going_negative() -> None:
    inputs = ([4, 2, 1, 4], [100, 3, 10], 1000, 1, 4)  # the hand example above
    simulated, went_negative = grouped_simulation(*inputs)
    assert went_negative and simulated[1] == 12 - 200
    balances, _ = run_rounds(*inputs)
    assert min(balances) >= 0


@given(markets(unique_accounts=True))
def test_whole_markets_agree_with_the_grouped_simulation(market: Market) -> None:
    result = market.rewards()
    if result.outcome == "rewarded":
        deposits = [c.deposit for c in market.contributions]
        simulated, went_negative = grouped_simulation(
            result.accuracies, deposits, market.bounty, market.min_stake, result.test_size
        )
        if not went_negative:
            assert tuple(simulated) == result.balances
