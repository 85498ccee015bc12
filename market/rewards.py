"""The reward computation of DESIGN.md ("Reward computation (normative)"), written plainly.

This module *defines* the results the contract must reproduce to the wei; it is the
reference, not the fast version (the rounds here cost O(K²); the contract's lazy balances
and heap must give the identical ``β`` and payouts). Integers only: balances are kept
scaled by ``m`` (a balance ``β`` is worth ``β / m`` wei) so no division happens before the
final payouts.

Contribution ids are 1-based, as on-chain: ``payouts[i - 1]`` belongs to contribution ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from market.encoding import validate_samples
from market.errors import InvalidParams
from market.model import Perceptron
from market.types import Address, Sample, TestSample, Wei


@dataclass(frozen=True)
class Contribution:
    """One contribution: ``contributor`` deposited ``deposit`` wei (as charged) for ``sample``."""

    contributor: Address
    deposit: Wei
    sample: Sample


class Deposited(Protocol):
    """Anything with a depositor and a deposit (a :class:`Contribution`)."""

    @property
    def contributor(self) -> Address: ...

    @property
    def deposit(self) -> Wei: ...


@dataclass(frozen=True)
class Round:
    """One round of the computation, for comparison with ``RoundCompleted`` and for plots."""

    number: int  # 1-based
    active: tuple[int, ...]  # ids active during the round, in order
    scores: tuple[int, ...]  # s_i of each active id, aligned with ``active``
    amount: int  # r, wei of bounty spent by the round
    total: int  # Σ r up to and including this round (the event's ``total``)
    remaining: int  # R after the round (the event's ``remaining``)
    removed: tuple[int, ...]  # ids removed at the end of the round (none in the final round)
    balances: tuple[int, ...]  # β of every contribution after the round (scaled by m)


@dataclass(frozen=True)
class RewardResult:
    """Everything the contract's reward phase is compared on.

    ``outcome`` is ``"refunded"`` when ``m = 0`` or nobody contributed: deposits go back,
    the bounty returns to the provider, there are no rounds, and ``balances`` are the
    untouched ``d_i · m``.
    """

    outcome: Literal["rewarded", "refunded"]
    bounty: Wei
    test_size: int  # m
    accuracies: tuple[int, ...]  # A_0 .. A_K, correct test samples after each contribution
    trained_weights_hash: bytes  # keccak256(WEIGHTS) of M_K (the event TrainingCompleted)
    balances: tuple[int, ...]  # final β_i, i = 1..K, scaled by m
    rounds: tuple[Round, ...]
    payouts: tuple[Wei, ...]  # ⌊β_i / m⌋ per contribution
    account_payouts: dict[Address, Wei]  # Σ of the payouts of each account's contributions
    provider_remainder: Wei  # bounty + Σ d_i − Σ payouts

    @property
    def total_payout(self) -> Wei:
        """Σ of the contributions' payouts (the event ``RewardsFinalized.totalPayout``)."""
        return Wei(sum(self.payouts))


@dataclass(frozen=True)
class CancelRefunds:
    """What each party may withdraw from a cancelled market."""

    refunds: tuple[Wei, ...]  # d_i + share_i per contribution
    shares: tuple[Wei, ...]  # share_i = ⌊B·C_i/D⌋ − ⌊B·C_{i−1}/D⌋, summing to B
    account_refunds: dict[Address, Wei]
    provider_refund: Wei  # the bounty if nobody contributed, else 0


# ----------------------------------------------------------------------------- the pieces


def training_pass(
    model: Perceptron, test: Sequence[TestSample], contributions: Sequence[Contribution]
) -> tuple[list[int], Perceptron]:
    """``A_0 .. A_K`` (``A_i = correct(M_i)``) and the trained model ``M_K``.

    ``model`` itself is left untouched.
    """
    current = model.copy()
    accuracies = [current.correct_count(test)]
    for contribution in contributions:
        current.update(contribution.sample.features, contribution.sample.label)
        accuracies.append(current.correct_count(test))
    return accuracies, current


def round_scores(accuracies: Sequence[int], active: Sequence[int]) -> list[int]:
    """``s_i = A_i − A_prev(i)`` over the active ids, in order; the first compares with ``A_0``."""
    scores = []
    previous = accuracies[0]
    for i in active:
        scores.append(accuracies[i] - previous)
        previous = accuracies[i]
    return scores


def run_rounds(
    accuracies: Sequence[int], deposits: Sequence[int], bounty: int, min_stake: int, m: int
) -> tuple[list[int], list[Round]]:
    """The rounds of DESIGN.md: the final scaled balances ``β_1..β_K`` and the trace.

    ``accuracies`` are ``A_0..A_K`` and ``deposits`` ``d_1..d_K``; requires ``K ≥ 1``,
    ``m ≥ 1`` and ``min_stake ≥ 1``.
    """
    balances = [d * m for d in deposits]  # balances[i - 1] is β_i
    threshold = min_stake * m
    active = list(range(1, len(deposits) + 1))
    remaining = bounty
    total = 0
    rounds: list[Round] = []
    while True:
        scores = round_scores(accuracies, active)
        amount = remaining
        for i, s in zip(active, scores, strict=True):
            if s < 0:
                amount = min(amount, balances[i - 1] // -s)
        for i, s in zip(active, scores, strict=True):
            balances[i - 1] += s * amount
        remaining -= amount
        total += amount
        removed: list[int] = []
        if remaining > 0:
            removed = [i for i in active if balances[i - 1] < threshold]
            # Progress: if r < R, r is ⌊β_j/−s_j⌋ for some j, which leaves β_j < −s_j ≤ m ≤ θ,
            # so j is removed here; hence at most K rounds.
            assert removed, "a non-final round must remove a contribution"
        rounds.append(
            Round(
                number=len(rounds) + 1,
                active=tuple(active),
                scores=tuple(scores),
                amount=amount,
                total=total,
                remaining=remaining,
                removed=tuple(removed),
                balances=tuple(balances),
            )
        )
        active = [i for i in active if i not in removed]
        if remaining == 0 or not active:
            return balances, rounds


def _by_account(parties: Sequence[Deposited], amounts: Sequence[int]) -> dict[Address, Wei]:
    totals: dict[Address, Wei] = {}
    for party, amount in zip(parties, amounts, strict=True):
        totals[party.contributor] = Wei(totals.get(party.contributor, 0) + amount)
    return totals


def _check_inputs(
    model: Perceptron,
    test: Sequence[TestSample],
    contributions: Sequence[Contribution],
    bounty: int,
    min_stake: int,
) -> None:
    if bounty < 0:
        raise InvalidParams("bounty", f"{bounty} is negative")
    if min_stake < 1:
        raise InvalidParams("minStake", f"{min_stake} is below 1 wei")
    for i, contribution in enumerate(contributions, start=1):
        if contribution.deposit < min_stake:
            message = f"contribution {i} deposited {contribution.deposit} < minStake {min_stake}"
            raise InvalidParams("deposit", message)
    # A strictly increasing list of indices below dim has at most dim entries.
    validate_samples((c.sample for c in contributions), model.dim, model.dim)
    validate_samples((t.sample for t in test), model.dim, model.dim)


# ----------------------------------------------------------------------------- results


def compute_rewards(
    *,
    model: Perceptron,
    test: Sequence[TestSample],
    contributions: Sequence[Contribution],
    bounty: int,
    min_stake: int,
) -> RewardResult:
    """The whole reward computation of a market.

    ``model`` is the initial model ``M_0``; ``test`` the revealed test samples outside the
    public portion (``m = len(test)``); ``contributions`` in submission order.
    """
    _check_inputs(model, test, contributions, bounty, min_stake)
    m = len(test)
    deposits = [int(c.deposit) for c in contributions]
    accuracies, trained = training_pass(model, test, contributions)
    if m == 0 or not contributions:
        return RewardResult(
            outcome="refunded",
            bounty=Wei(bounty),
            test_size=m,
            accuracies=tuple(accuracies),
            trained_weights_hash=trained.weights_hash(),
            balances=tuple(d * m for d in deposits),
            rounds=(),
            payouts=tuple(Wei(d) for d in deposits),
            account_payouts=_by_account(contributions, deposits),
            provider_remainder=Wei(bounty),
        )
    balances, rounds = run_rounds(accuracies, deposits, bounty, min_stake, m)
    payouts = [b // m for b in balances]
    return RewardResult(
        outcome="rewarded",
        bounty=Wei(bounty),
        test_size=m,
        accuracies=tuple(accuracies),
        trained_weights_hash=trained.weights_hash(),
        balances=tuple(balances),
        rounds=tuple(rounds),
        payouts=tuple(Wei(p) for p in payouts),
        account_payouts=_by_account(contributions, payouts),
        provider_remainder=Wei(bounty + sum(deposits) - sum(payouts)),
    )


def projected_payouts(
    *,
    model: Perceptron,
    test: Sequence[TestSample],
    contributions: Sequence[Contribution],
    bounty: int,
    min_stake: int,
) -> dict[Address, Wei]:
    """What each account will be able to withdraw, once the test set is known."""
    result = compute_rewards(
        model=model, test=test, contributions=contributions, bounty=bounty, min_stake=min_stake
    )
    return result.account_payouts


def cancel_refunds(bounty: int, contributions: Sequence[Deposited]) -> CancelRefunds:
    """Refunds of a cancelled market (docs/protocol.md).

    Contribution ``i`` gets ``d_i + ⌊B·C_i/D⌋ − ⌊B·C_{i−1}/D⌋`` where ``C_i`` is the running
    sum of deposits and ``D = C_K``: the shares telescope to exactly ``B``. The provider gets
    nothing back, unless nobody contributed, when the bounty returns to the provider.
    """
    if bounty < 0:
        raise InvalidParams("bounty", f"{bounty} is negative")
    deposits = [int(c.deposit) for c in contributions]
    if not deposits:
        return CancelRefunds((), (), {}, Wei(bounty))
    total = sum(deposits)
    if total <= 0:
        raise InvalidParams("deposit", "contributions must have deposited something")
    shares: list[int] = []
    running = 0
    for d in deposits:
        before = bounty * running // total
        running += d
        shares.append(bounty * running // total - before)
    refunds = [d + share for d, share in zip(deposits, shares, strict=True)]
    return CancelRefunds(
        refunds=tuple(Wei(r) for r in refunds),
        shares=tuple(Wei(s) for s in shares),
        account_refunds=_by_account(contributions, refunds),
        provider_refund=Wei(0),
    )


__all__ = [
    "CancelRefunds",
    "Contribution",
    "Deposited",
    "RewardResult",
    "Round",
    "cancel_refunds",
    "compute_rewards",
    "projected_payouts",
    "round_scores",
    "run_rounds",
    "training_pass",
]
